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
    assert result["passes"] == 4 and result["table_drift"]["timed"] == 24
    corrected = result["drift_corrected"]  # the measured times divided by the drift ratio
    ratio = result["table_drift"]["ratio"]
    assert 0.0 <= corrected["within_5pct"] <= corrected["within_10pct"] <= 1.0
    errors = sorted(abs(r["predicted_ms"] * ratio / r["measured_ms"] - 1) for r in result["rows"])
    assert corrected["median_abs_rel_err"] == pytest.approx(errors[1], abs=2e-3)
    for row in result["rows"]:
        assert row["rel_err"] == pytest.approx((row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"],
                                               abs=1e-3)
        assert row["measured_ms"] > 0 and row["weights_mb"] > 0 and 0 <= row["retest_rel_diff"] < 2
        assert row["source"] == "measured (cpu table)"
        assert row["entries_ms"] == pytest.approx(row["predicted_ms"], abs=1e-3)  # no correction: the plain sum
    assert 0.0 <= result["correction_fitted_on_these_networks"]["within_10pct"] <= 1.0


def test_error_summary_counts_and_ranks() -> None:
    summary = latency_fidelity.error_summary([1.0, 2.15, 2.9, 5.0], [1.0, 2.0, 3.0, 4.0])
    assert summary["within_5pct"] == 0.5 and summary["within_10pct"] == 0.75
    assert summary["median_abs_rel_err"] == pytest.approx((0.075 + 1 / 30) / 2)
    assert summary["spearman"] == pytest.approx(1.0)


def test_in_sample_fit_recovers_a_correction_of_its_form() -> None:
    rows = [{"entries_ms": e, "weights_mb": w, "activations_mb": a, "measured_ms": 1.3 * e + 0.1 * w + 0.5 * a}
            for e, w, a in [(10.0, 5.0, 1.0), (20.0, 30.0, 2.0), (7.0, 1.0, 4.0), (40.0, 12.0, 0.5)]]
    fit = latency_fidelity._in_sample_fit(rows)
    assert fit["within_5pct"] == 1.0 and fit["median_abs_rel_err"] == pytest.approx(0, abs=1e-9)
    assert fit["fit"]["scale"] == pytest.approx(1.3) and fit["fit"]["ms_per_activation_mb"] == pytest.approx(0.5)
    assert latency_fidelity._in_sample_fit(rows[:2]) is None  # a fit needs 3 networks


def test_interleave_alternates_then_appends_the_rest() -> None:
    assert latency_fidelity._interleave([1, 2, 3], ["a"]) == [1, "a", 2, 3]
    assert latency_fidelity._interleave([1], ["a", "b", "c"]) == [1, "a", "b", "c"]
    assert latency_fidelity._interleave([1, 2], []) == [1, 2]


def test_odd_passes_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        latency_fidelity.main(["--passes", "3"])
    assert "--passes must be even" in capsys.readouterr().err


def test_fresh_table_is_measured_and_corrected_in_the_run_and_writes_only_its_result(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "fresh.json"
    assert latency_fidelity.main(["--target", "cpu", "--archs", "2", "--resolution", "32", "--repeats", "2",
                                  "--fresh-table", "--correction-networks", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["fresh_table"] is True and result["table"] == "measured by this run (temporary)"
    assert result["correction"]["networks"] == 3 and result["table_drift"] is None
    assert result["correction_networks_timed_with_test_networks"] == 3 and len(result["rows"]) == 2
    assert result["correction_fitted_on_these_networks"] is None  # 2 test networks: too few to fit
    assert result["entries_measured_for_this_run"] > 10
    assert all(row["source"] == "measured (cpu table); additivity-corrected on 3 networks" and
               row["activations_mb"] > 0 for row in result["rows"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.json"]  # no table left beside it


def test_fresh_table_refuses_a_stored_one(capsys) -> None:
    with pytest.raises(SystemExit):
        latency_fidelity.main(["--fresh-table", "--latency-db", "x.sqlite"])
    assert "--fresh-table measures its own table" in capsys.readouterr().err
