"""Rank agreement between two lists of scores: Kendall's tau-a and Spearman's rho (pure Python, no SciPy)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence


def _check(a: Sequence[float], b: Sequence[float], name: str) -> None:
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"{name} needs two lists of the same length >= 2, got {len(a)} and {len(b)}")


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-a: (concordant - discordant pairs) / all pairs; a tie in either list counts 0."""
    _check(a, b, "kendall_tau")
    pairs = list(itertools.combinations(range(len(a)), 2))
    score = sum(((a[i] > a[j]) - (a[i] < a[j])) * ((b[i] > b[j]) - (b[i] < b[j])) for i, j in pairs)
    return score / len(pairs)


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: Pearson correlation of the average ranks (0 when either list is constant)."""
    _check(a, b, "spearman_rho")
    ra, rb = average_ranks(a), average_ranks(b)
    n = len(ra)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / (va * vb) ** 0.5 if va > 0 and vb > 0 else 0.0
