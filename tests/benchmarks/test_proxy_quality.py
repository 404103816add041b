from __future__ import annotations

import pytest

from benchmarks.proxy_quality import noise_ceiling


def _row(digest: str, accuracy: float, naswot: float) -> dict:
    return {"digest": digest, "trained_accuracy": accuracy, "proxies": {"naswot": {"value": naswot, "seconds": 0.1}}}


def test_noise_ceiling_compares_two_trainings_on_the_retested_subset_only():
    rows = [_row("a", 0.50, 1.0), _row("b", 0.60, 3.0), _row("c", 0.55, 2.0), _row("d", 0.70, 0.5)]
    retests = {"a": 0.52, "b": 0.57, "c": 0.58}  # d was not trained again; b and c swap places
    ceiling = noise_ceiling(rows, retests)
    assert ceiling["archs"] == 3
    assert ceiling["spearman_between_trainings"] == pytest.approx(0.5)
    assert ceiling["median_abs_diff"] == pytest.approx(0.03)
    assert ceiling["proxies_on_this_subset"]["naswot"] == pytest.approx(1.0)  # ranks a < c < b on the first run
