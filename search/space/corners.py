"""The ends of a space and random draws from it: what latency benchmarks and the latency predictor's fit sample.

A *corner* answers every choice of :meth:`SearchSpace.suggest` by rule (:class:`Corner`): for each block
the space lists, the fast corner (narrowest, fewest blocks, no SE, the smallest kernel set, the plain
Conv downsample where listed, the stock head stem) and the slow one (widest, deepest, SE where the block
takes it, dynamic SE where listed, the largest kernel set, a RepConv head stem with the most layers), on
the ``yolo26`` backbone where the space lists it; and for each RepViT backbone the space lists, its fast
and slow corner (the neck stages' ends). Corners are architectures of the space and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Corner", "corners", "samples"]

SE_SLOW_FIRST = ("in_blocks", "after_concat", "none")  # an SE in every block costs most


class Corner:
    """A ``TrialLike`` that answers every parameter by rule: the fast or the slow end of each choice."""

    def __init__(self, block: str, slow: bool, backbone: str = "yolo26"):
        self.block, self.slow, self.backbone = block, slow, backbone

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        """The extreme of ``choices`` for parameter ``name`` (``<stage>.<what>``)."""
        what = name.rsplit(".", 1)[-1]
        items = list(choices)
        if name == "backbone":
            return self.backbone if self.backbone in items else items[0]
        if what == "block":
            return self.block if self.block in items else items[0]
        if what in ("width", "depth", "head_stem_layers"):
            return max(items) if self.slow else min(items)
        if what == "se":
            order = SE_SLOW_FIRST if self.slow else tuple(reversed(SE_SLOW_FIRST))
            return next(p for p in order if p in items)
        if what == "kernels":
            return max(items, key=len) if self.slow else min(items, key=len)
        if what == "se_kind":
            return "dynamic" if self.slow and "dynamic" in items else items[0]
        if what == "downsample":
            return "Conv" if "Conv" in items and not self.slow else items[-1]
        if what == "head_stem":  # the stock stem is the fast end, a RepConv stem (full 3x3 convs) the slow one
            others = [s for s in items if s != "stock"]
            return others[-1] if self.slow and others else "stock" if "stock" in items else items[0]
        return items[-1] if self.slow else items[0]  # se_reduction / se_ratios: the ends of the lists


def corners(space: Any) -> dict[str, Any]:
    """``"fast C3k2"`` / ``"slow RepViT"`` ... -> the corner architecture of each block the space lists."""
    blocks = sorted({b for _, st in space.spec.stages if st.tie is None for b in st.blocks})
    out = {f"{'slow' if slow else 'fast'} {b}": space.suggest(Corner(b, slow)) for slow in (False, True)
           for b in blocks}
    for backbone in space.spec.backbones:
        if backbone != "yolo26":
            out.update({f"{'slow' if slow else 'fast'} {backbone}": space.suggest(Corner("C3k2", slow, backbone))
                        for slow in (False, True)})
    return out


def samples(space: Any, n: int, seed: int) -> dict[str, Any]:
    """``"sample i"`` -> the i-th of ``n`` architectures drawn by Optuna's random sampler with ``seed``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return {f"sample {i}": space.suggest(study.ask()) for i in range(n)}
