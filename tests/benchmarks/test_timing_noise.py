from __future__ import annotations

import json

import pytest

from benchmarks import timing_noise


def test_deviation_of_medians_over_every_choice_of_passes() -> None:
    passes = [10.0, 10.0, 10.0, 14.0]  # median 10; one pass in a slow state
    assert timing_noise.deviation_of_medians(passes, 1) == pytest.approx(0.0)  # 3 of the 4 single passes are exact
    assert timing_noise.deviation_of_medians(passes, 3) == pytest.approx(0.0)  # the median of 3 drops the outlier
    assert timing_noise.deviation_of_medians([10.0, 12.0, 11.0], 1) == pytest.approx(1 / 11)


def test_timing_noise_on_two_small_networks(tmp_path) -> None:
    out = tmp_path / "noise.json"
    assert timing_noise.main(["--archs", "2", "--passes", "4", "--resolution", "32", "--repeats", "3",
                              "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["archs"] == 2 and result["passes"] == 4
    assert all(len(r["pass_ms"]) == 4 and min(r["pass_ms"]) > 0 for r in result["rows"])
    assert result["max_over_min_pass_median"] >= 1.0
    assert {"deviation_1_pass", "deviation_3_pass"} <= set(result) and "deviation_4_pass" not in result
