"""The configuration of a search run: resolved once at the command line, recorded on the study, read back typed.

``search.run`` turns its flags and the space file into one :class:`RunConfig`; the driver, the
objective and the Ray backend read only that object; it is stored on the study as the one
versioned user attr ``run_config``; ``search.pick`` / ``retrain`` / ``export`` read it back with
:meth:`RunConfig.from_study`. Studies written before the attr existed (separate ``objectives``,
``constraints``, ``latency`` and ``train`` attrs) are read through the same method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from search.space.schema import CONSTRAINT_RE, Constraint, OneShotSettings
from trainers.train.results import TrialSettings

CONFIG_ATTR = "run_config"
CONFIG_VERSION = 1
DEFAULT_OBJECTIVES: tuple[tuple[str, str], ...] = (("map50_95", "maximize"), ("latency_ms", "minimize"))
MODES = ("trial", "oneshot")
ONESHOT_FLAGS = (("--supernet-epochs", "supernet_epochs"), ("--subnets", "subnets"), ("--calib-images", "calib_images"),
                 ("--retrain-top", "retrain_top"), ("--supernet-device", "supernet_device"))


def parse_constraint(text: str) -> Constraint:
    """A constraint from its ``str()`` form (``"params_m <= 4"``); ``ValueError`` if it does not read so."""
    m = CONSTRAINT_RE.match(text)
    if m is None:
        raise ValueError(f"constraint must read 'metric <= number' or 'metric >= number', got {text!r}")
    return Constraint(m.group(1), m.group(2), float(m.group(3)))


def password_note(url: str) -> str:
    """What to add after a command printed with :func:`url_without_password` (``""`` when ``url`` has none)."""
    return " (password: PGPASSWORD or ~/.pgpass)" if url_without_password(url) != url else ""


def url_without_password(url: str) -> str:
    """``url`` with its password left out (``postgresql://user@host/db``): what a study records, prints and ships.

    A command given such a URL connects with the password of the URL its user gives, or with
    PostgreSQL's own ``PGPASSWORD`` / ``~/.pgpass`` (libpq reads them when the URL has none).
    A URL without a password, or one SQLAlchemy cannot read, comes back unchanged.
    """
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return url
    if parsed.password is None:
        return url
    bare = sqlalchemy.engine.URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port,
                                        parsed.database, parsed.query)  # (URL.set ignores password=None)
    return bare.render_as_string(hide_password=False)


@dataclass(frozen=True)
class RunConfig:
    """Everything a search run decided.

    Attributes:
        study, storage: the Optuna study name and storage URL (with its password in memory only:
            :meth:`command`, :meth:`to_record` and every printed line leave it out, :func:`url_without_password`).
        root: the studies folder (absolute); trial folders live in ``root/study``.
        space_file: the space YAML the run was started with (absolute).
        objectives, constraints: as in the space file.
        trial: how every trial trains and measures (``out`` is the study folder, ``nc`` resolved).
        trials, sampler, seed, backend, workers, ray_address: how the search runs.
        latency_budget_ms, trial_timeout: limits per trial.
        rungs, eta: successive halving (:mod:`search.engine.rungs`): the epochs at which a trial is compared with the
            others, and the reduction factor; ``()``: off. ``rung_min_signal``: the mAP spread at a
            rung below which nobody is stopped there (the space's ``train.rung_min_signal``).
        timeout: seconds after the workers start past which no new trial starts (running ones finish).
        epoch_budget: epochs trained by the study's trials in all past which no new trial starts.
        latency_margin_pct: with predicted latency, the budget's margin (the predictor's held-out 95th-percentile
            over-prediction): a candidate is pruned only when its prediction exceeds the budget by more.
        mode: ``trial`` (every architecture trained) or ``oneshot`` (scored on a supernet,
            :mod:`search.engine.oneshot`).
        oneshot: with ``mode`` ``oneshot``, the space's ``oneshot`` section with the flags over it (supernet
            epochs, subnets scored, calibration images, front architectures retrained); ``None`` otherwise.
            Studies recorded before these fields read back as ``trial`` / ``None``.
        presets: names of ``spaces/presets`` architectures evaluated as trials beside the search
            (:mod:`search.space.presets`; ``--include-presets`` or the space's ``presets``).
    """

    study: str
    storage: str
    root: str
    space_file: str
    trial: TrialSettings
    objectives: tuple[tuple[str, str], ...] = DEFAULT_OBJECTIVES
    constraints: tuple[Constraint, ...] = ()
    trials: int = 10
    sampler: str = "tpe"
    seed: int = 0
    backend: str = "optuna"
    workers: int = 1
    ray_address: str | None = None
    latency_budget_ms: float | None = None
    trial_timeout: float | None = None
    rungs: tuple[int, ...] = ()
    eta: int = 3
    rung_min_signal: float = 0.01
    timeout: float | None = None
    epoch_budget: int | None = None
    latency_margin_pct: float = 0.0
    mode: str = "trial"
    oneshot: OneShotSettings | None = None
    presets: tuple[str, ...] = ()
    source: str = field(default="run_config", compare=False)  # how it was read back: run_config or legacy attrs

    @property
    def folder(self) -> Path:
        """The study's folder of trial runs and reports."""
        return Path(self.root) / self.study

    def trial_folder(self, number: int, arch_hash: str) -> Path:
        """The run folder of trial ``number`` (architecture ``arch_hash``): ``<study folder>/trial_NNNN_<hash>``."""
        return Path(self.trial.out) / f"trial_{number:04d}_{arch_hash}"

    @property
    def planned_trials(self) -> int:
        """Trials the search expects to run: ``trials``, or fewer when ``epoch_budget`` buys fewer full ones.

        Sizes the sampler's random start: with ``--epoch-budget 40 --epochs 8`` a study trains about
        5 full trials whatever ``--trials`` says, and a start sized from ``--trials`` would leave
        TPE nothing but random draws.
        """
        if self.epoch_budget is None:
            return self.trials
        return max(1, min(self.trials, self.epoch_budget // max(1, self.trial.epochs)))

    def command(self) -> str:
        """The ``python -m search.run`` command line that reproduces this run, every setting spelt out.

        Flags, not the space file, carry the train settings, so a later edit of the space file's
        ``train`` section does not change what the command runs (the blocks still come from it).
        """
        import shlex

        t = self.trial
        flags: list[tuple[str, Any]] = [
            ("--space", self.space_file), ("--study", self.study), ("--storage", url_without_password(self.storage)),
            ("--studies-dir", self.root), ("--data", t.data or None), ("--trials", self.trials),
            ("--epochs", t.epochs), ("--imgsz", t.imgsz), ("--batch", t.batch), ("--device", t.device),
            ("--seed", self.seed), ("--sampler", self.sampler), ("--rungs", ",".join(map(str, self.rungs))),
            ("--eta", self.eta), ("--latency-backend", t.latency.backend), ("--backend", self.backend),
            ("--workers", self.workers), ("--ray-address", self.ray_address),
            ("--latency-budget-ms", self.latency_budget_ms), ("--trial-timeout", self.trial_timeout),
            ("--epoch-budget", self.epoch_budget), ("--timeout", self.timeout), ("--teacher", t.teacher),
            ("--init-from", t.init_from), ("--train-threads", t.train_threads),
            ("--latency-source", t.latency_source),
            ("--latency-model", t.latency_model), ("--mode", self.mode),
            ("--include-presets", ",".join(self.presets) or None)]
        if self.oneshot is not None:
            flags += [(flag, getattr(self.oneshot, name)) for flag, name in ONESHOT_FLAGS]
        words = ["python", "-m", "search.run"]
        for flag, value in flags:
            if value is not None:
                words += [flag, str(value)]
        return shlex.join(words)

    def with_trial(self, **changes: Any) -> RunConfig:
        """A copy with some trial settings changed (e.g. ``data`` and ``nc`` once the dataset is known)."""
        return replace(self, trial=replace(self.trial, **changes))

    def to_record(self) -> dict[str, Any]:
        """Plain JSON data for the study's ``run_config`` user attr, with a format version (storage: no password)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("trial", "source")}
        data.update(version=CONFIG_VERSION, oneshot=asdict(self.oneshot) if self.oneshot is not None else None,
                    storage=url_without_password(self.storage), trial=self.trial.to_dict(),
                    objectives=[list(o) for o in self.objectives], constraints=[str(c) for c in self.constraints],
                    rungs=list(self.rungs), presets=list(self.presets))
        return data

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_record`; ``ValueError`` on another format version.

        Keys a record written before them lacks take their defaults (``mode`` ``trial``, no ``oneshot``).
        """
        if data.get("version") != CONFIG_VERSION:
            raise ValueError(f"run_config version must be {CONFIG_VERSION}, got {data.get('version')!r}")
        known = {f.name for f in fields(cls)} - {"source"}
        kw = {k: v for k, v in data.items() if k in known}
        kw.update(trial=TrialSettings.from_dict(data["trial"]),
                  objectives=tuple((m, d) for m, d in data["objectives"]),
                  constraints=tuple(parse_constraint(c) for c in data["constraints"]),
                  rungs=tuple(data.get("rungs", ())), presets=tuple(data.get("presets", ())),
                  oneshot=OneShotSettings(**data["oneshot"]) if data.get("oneshot") is not None else None)
        return cls(**kw)

    def record_on(self, study: Any) -> None:
        """Store this configuration on ``study`` (one user attr, replaced on resume)."""
        study.set_user_attr(CONFIG_ATTR, self.to_record())

    @classmethod
    def from_study(cls, study: Any, storage: str = "") -> RunConfig:
        """The configuration recorded on ``study`` (the versioned attr, else the attrs of older studies).

        ``storage``: the URL ``study`` was opened from. A SQLite file opened elsewhere than recorded (moved or
        copied) keeps it: the study's artifacts are stored beside the file that holds their records.
        """
        attrs = study.user_attrs
        if CONFIG_ATTR in attrs:
            cfg = cls.from_record(attrs[CONFIG_ATTR])
            if storage.startswith("sqlite:///") and ":memory:" not in storage and storage != cfg.storage:
                cfg = replace(cfg, storage=storage)
            return cfg
        return _from_legacy_attrs(study.study_name, storage, attrs)


def _from_legacy_attrs(name: str, storage: str, attrs: dict[str, Any]) -> RunConfig:
    """A study written before ``run_config``: ``space``, ``objectives``, ``constraints``, ``latency``, ``train``."""
    lat, train = attrs.get("latency", {}), attrs.get("train", {})
    root = ""
    if storage.startswith("sqlite:///"):
        root = str(Path(storage[len("sqlite:///"):]).parent)
    defaults = TrialSettings(data="", out="")
    trial = TrialSettings(
        data=train.get("data") or "", out=str(Path(root) / name) if root else "",
        epochs=train.get("epochs", defaults.epochs), imgsz=train.get("imgsz", defaults.imgsz),
        batch=train.get("batch", defaults.batch), device=lat.get("device", defaults.device),
        latency=replace(defaults.latency, imgsz=lat.get("imgsz", defaults.latency.imgsz),
                        device=lat.get("device", defaults.latency.device),
                        dtype=lat.get("dtype", defaults.latency.dtype)),
        head="nms")  # before the head was pinned, validation used Ultralytics' default: one-to-many + NMS
    objectives = tuple((m, d) for m, d in attrs.get("objectives", DEFAULT_OBJECTIVES))
    constraints = tuple(parse_constraint(c) for c in attrs.get("constraints", []))
    return RunConfig(study=name, storage=storage, root=root, space_file=attrs.get("space", ""), trial=trial,
                     objectives=objectives, constraints=constraints, source="legacy attrs")
