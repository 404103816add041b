from __future__ import annotations

import json

import pytest

from benchmarks import latency_fidelity


def test_fidelity_on_a_fresh_32px_table(tmp_path):
    out = tmp_path / "fidelity.json"
    assert latency_fidelity.main(["--target", "cpu", "--archs", "3", "--resolution", "32", "--repeats", "3",
                                  "--latency-db", str(tmp_path / "cpu.sqlite"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["archs"] == 3 and result["entries_measured_for_this_run"] > 10
    assert 0.0 <= result["within_5pct"] <= result["within_10pct"] <= 1.0
    assert result["correction"] is None  # nothing fitted on a new table: the plain sum
    for row in result["rows"]:
        assert row["rel_err"] == pytest.approx((row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"],
                                               abs=1e-3)
        assert row["measured_ms"] > 0 and row["weights_mb"] > 0 and 0 <= row["retest_rel_diff"] < 2
        assert row["source"] == "measured (cpu table)"
