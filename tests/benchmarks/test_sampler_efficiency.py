from __future__ import annotations

import pytest

from benchmarks.sampler_efficiency import hypervolume


def test_hypervolume_of_a_staircase():
    # front (1 ms, 2), (3 ms, 5); (2 ms, 1) and (4 ms, 5) are dominated; box 10 ms x 10
    points = [(2.0, 1.0), (1.0, 2.0), (3.0, 5.0), (4.0, 5.0)]
    assert hypervolume(points, budget_ms=10.0, proxy_max=10.0) == pytest.approx((2 * 2 + 7 * 5) / 100)


def test_hypervolume_bounds():
    assert hypervolume([], 5.0, 1.0) == 0.0
    assert hypervolume([(0.0, 1.0)], 5.0, 1.0) == pytest.approx(1.0)
