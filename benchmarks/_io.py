"""Helpers shared by the benchmark scripts: atomic result files and rank correlation."""
from __future__ import annotations

import numpy as np

from common.files import write_json_atomic, write_text_atomic

__all__ = ["write_json_atomic", "write_text_atomic", "spearman", "kendall"]


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation of two equally long lists (average ranks for ties)."""
    def ranks(values: list[float]) -> np.ndarray:
        order = np.argsort(values, kind="stable")
        sorted_values = np.asarray(values, dtype=float)[order]
        out = np.empty(len(values))
        i = 0
        while i < len(values):
            j = i
            while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
                j += 1
            out[order[i:j + 1]] = (i + j) / 2
            i = j + 1
        return out
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def kendall(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two equally long lists (O(n^2), fine for a few hundred points)."""
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                concordant += 1
            else:
                discordant += 1
    denominator = np.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return float((concordant - discordant) / denominator) if denominator else 0.0
