"""A latency cost model per target: non-negative linear in the fused graph's operator features.

The model predicts an architecture's latency as a *ratio to the stock model* measured in the same
conditions (interleaved), so a fit survives the run-to-run drift of a shared CPU: ratio =
intercept + sum(w_f * feature_f), every weight >= 0 (an operator never makes a model faster), fit
by non-negative least squares (:func:`fit_cost_model`). It is saved as JSON with the conditions of
its target (:class:`TargetConditions`); :meth:`CostModel.check_target` refuses another target with
one line naming the condition that differs, and :meth:`CostModel.predict_ratio` refuses a graph
that ran an operator the fit never saw (the caller measures instead: never a silent guess).
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainers.latency.features import GraphFeatures
from trainers.latency.setting import LatencySetting

MODEL_VERSION = 1

__all__ = ["CostModel", "TargetConditions", "UnseenOperator", "fit_cost_model"]


class UnseenOperator(ValueError):
    """The graph runs an operator (or feature) the cost model was not fit on."""


@dataclass(frozen=True)
class TargetConditions:
    """Everything a latency figure depends on besides the model: the target a cost model was fit for."""

    backend: str
    backend_version: str
    device: str
    dtype: str
    batch: int
    imgsz: int
    threads: int
    head: str
    torch: str
    machine: str

    @classmethod
    def here(cls, setting: LatencySetting) -> TargetConditions:
        """The conditions of measuring ``setting`` on this machine with the runtimes installed here."""
        import torch

        from trainers.latency.backends import get_backend

        r = setting.resolve()
        return cls(backend=r.backend, backend_version=get_backend(r.backend).version(), device=setting.device_name,
                   dtype=r.dtype, batch=r.batch, imgsz=r.imgsz, threads=r.timed_threads, head=r.head,
                   torch=str(torch.__version__), machine=platform.processor() or platform.machine())

    def first_difference(self, other: TargetConditions) -> str | None:
        """``"imgsz: model 640, asked 320"`` for the first condition that differs; ``None`` when all agree."""
        mine, theirs = asdict(self), asdict(other)
        for key, value in mine.items():
            if theirs[key] != value:
                return f"{key}: model {value!r}, asked {theirs[key]!r}"
        return None


@dataclass(frozen=True)
class CostModel:
    """Ratio-to-stock latency model of one target: weights per feature, the operators seen, fit statistics."""

    conditions: TargetConditions
    features: tuple[str, ...]
    weights: tuple[float, ...]
    intercept: float
    ops: frozenset[str]
    stock_ms: float
    space: str = ""
    stats: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def model_id(self) -> str:
        """A short id of this fit (what trial records name)."""
        import hashlib

        blob = json.dumps([self.features, self.weights, self.intercept], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def check_target(self, conditions: TargetConditions) -> None:
        """``ValueError`` (one line) when ``conditions`` are not this model's target."""
        if (diff := self.conditions.first_difference(conditions)) is not None:
            raise ValueError(f"latency model {self.model_id} was fit for another target ({diff})")

    def predict_ratio(self, graph: GraphFeatures) -> float:
        """The latency ratio to stock of ``graph``; :class:`UnseenOperator` if it runs something the fit never saw."""
        unseen = sorted((graph.ops - self.ops) | {k for k, v in graph.values if v and k not in self.features})
        if unseen:
            raise UnseenOperator(f"operators the latency model {self.model_id} never saw: {', '.join(unseen)}")
        values = graph.as_dict()
        return self.intercept + sum(w * values.get(f, 0.0) for f, w in zip(self.features, self.weights))

    def predict_ms(self, graph: GraphFeatures) -> float:
        """The predicted latency in ms (the ratio times the stock figure of the fit)."""
        return self.predict_ratio(graph) * self.stock_ms

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON (atomic replace); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": MODEL_VERSION, "conditions": asdict(self.conditions), "features": list(self.features),
                "weights": list(self.weights), "intercept": self.intercept, "ops": sorted(self.ops),
                "stock_ms": self.stock_ms, "space": self.space, "stats": self.stats, "id": self.model_id}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CostModel:
        """Read a saved model; ``ValueError`` (one line) for a missing, unreadable or other-version file."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"latency model {str(path)!r} cannot be read: {e}") from e
        if data.get("version") != MODEL_VERSION:
            raise ValueError(f"latency model {str(path)!r} has format version {data.get('version')!r}, "
                             f"this tool reads {MODEL_VERSION}")
        return cls(conditions=TargetConditions(**data["conditions"]), features=tuple(data["features"]),
                   weights=tuple(data["weights"]), intercept=float(data["intercept"]), ops=frozenset(data["ops"]),
                   stock_ms=float(data["stock_ms"]), space=data.get("space", ""), stats=data.get("stats", {}))


def fit_cost_model(graphs: list[GraphFeatures], ratios: list[float], conditions: TargetConditions,
                   stock_ms: float, space: str = "") -> CostModel:
    """Non-negative least squares of ``ratios`` on the graphs' features (plus a free intercept).

    ``ValueError`` when there are fewer graphs than coefficients (the fit would be underdetermined).
    """
    import numpy as np
    from scipy.optimize import nnls

    names = sorted({k for g in graphs for k, _ in g.values})
    if len(graphs) <= len(names) + 1:
        raise ValueError(f"a latency fit needs more architectures than coefficients ({len(names) + 1}), "
                         f"got {len(graphs)}")
    x = np.array([[g.as_dict().get(n, 0.0) for n in names] for g in graphs], dtype=float)
    y = np.asarray(ratios, dtype=float)
    scale = np.where(x.max(axis=0) > 0, x.max(axis=0), 1.0)  # columns on one scale: nnls converges well
    design = np.hstack([x / scale, np.ones((len(y), 1)), -np.ones((len(y), 1))])  # intercept = a - b, a, b >= 0
    coef, _ = nnls(design, y, maxiter=50 * design.shape[1])
    weights = coef[: len(names)] / scale
    ops = frozenset().union(*(g.ops for g in graphs))
    return CostModel(conditions=conditions, features=tuple(names), weights=tuple(float(w) for w in weights),
                     intercept=float(coef[-2] - coef[-1]), ops=ops, stock_ms=stock_ms, space=space)


_LOADED: dict[str, CostModel] = {}


def load_cached(path: str) -> CostModel:
    """:meth:`CostModel.load`, once per process and file (a search predicts hundreds of architectures)."""
    if path not in _LOADED:
        _LOADED[path] = CostModel.load(path)
    return _LOADED[path]


def predicted_report(model: Any, setting: LatencySetting, cost_model: CostModel) -> Any:
    """A :class:`~trainers.latency.report.LatencyReport` holding the cost model's figure for ``model`` in ``setting``
    (``mode`` ``predicted``, ``n`` 0, the model's id in ``post``); :class:`UnseenOperator` when it cannot predict."""
    import datetime

    import torch

    from trainers.latency.report import LatencyReport

    graph = graph_from(model, setting)
    ms = cost_model.predict_ms(graph)
    c = cost_model.conditions
    return LatencyReport(median_ms=ms, p90_ms=ms, mean_ms=ms, cv=0.0, n=0, mode="predicted", device=c.device,
                         dtype=c.dtype, batch=c.batch, imgsz=c.imgsz, threads=c.threads, torch=str(torch.__version__),
                         fused=True, backend=c.backend, backend_version=c.backend_version, head=c.head,
                         post=f"predicted by latency model {cost_model.model_id}",
                         measured_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def graph_from(model: Any, setting: LatencySetting) -> GraphFeatures:
    """The operator features of ``model``'s deployed form in ``setting``: from the layer cache when the model records
    its architecture (:func:`trainers.model.build.build_model` models; a layer not cached yet is traced on a model
    built afresh from that architecture, so a checkpoint never puts its own modules into the shared cache), else
    by tracing the model itself."""
    from trainers.latency.features import graph_features

    recorded = getattr(model, "yaml", None) or {}
    if "architecture" in recorded:
        from trainers.latency.feature_cache import shared_cache
        from trainers.model.build import architecture_of

        cache = shared_cache(setting.imgsz, setting.head, int(recorded["nc"]))
        return cache.features(architecture_of(model))
    return graph_features(model, setting.imgsz, setting.head)
