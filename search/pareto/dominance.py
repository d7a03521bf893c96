"""Pareto dominance, written once: the front (:mod:`search.pareto.front`) and the rungs
(:mod:`search.engine.rungs`) both decide with it. Every value is minimized (negate what is maximized).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["dominates", "non_dominated_fronts"]


def dominates(a: Sequence[float], b: Sequence[float], tied: int | None = None) -> bool:
    """``a`` dominates ``b``: no worse in every value, better in one.

    ``tied``: the index of a value whose difference is within noise (latencies whose intervals overlap); it
    counts as equal, and such a tie with every other value at least as good dominates (the earlier point of
    the front's order wins).
    """
    pairs = [(x, y, i == tied) for i, (x, y) in enumerate(zip(a, b))]
    if not all(equal or x <= y for x, y, equal in pairs):
        return False
    return tied is not None or any(x < y for x, y, equal in pairs if not equal)


def non_dominated_fronts(values: Sequence[Sequence[float]]) -> list[list[int]]:
    """Indices of ``values`` (minimized) by non-dominated front: front 1 first, each in index order."""
    left, fronts = list(range(len(values))), []
    while left:
        front = [i for i in left if not any(dominates(values[j], values[i]) for j in left if j != i)]
        fronts.append(front)
        left = [i for i in left if i not in front]
    return fronts
