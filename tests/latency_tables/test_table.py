"""Lookup of architectures in a table, measurement of missing entries, and estimation with its label."""
from __future__ import annotations

import dataclasses
import json
import random

import pytest

from latency_tables import table as table_module
from latency_tables.block_costs import COUNTS_FILE
from latency_tables.blocks import decompose
from latency_tables.correction import activations_mb, weights_mb
from latency_tables.estimate import EstimationError
from latency_tables.measure import Timing
from latency_tables.storage import LatencyDB
from latency_tables.table import LatencyTable, default_settings
from latency_tables.targets import TargetUnavailableError, get_target
from search_spaces import REFERENCE_ARCHS, TINY_ARCHS


def _table(tmp_path, target: str = "cpu", resolution: int = 32) -> LatencyTable:
    settings = default_settings(get_target(target), resolution=resolution)
    return LatencyTable(get_target(target), LatencyDB(tmp_path / f"{target}.sqlite"), settings)


def test_measured_prediction_is_the_sum_of_entries(tmp_path) -> None:
    table = _table(tmp_path)
    spec = TINY_ARCHS["tiny_window"]
    blocks = decompose(spec, 32)
    assert table.measure_missing(blocks, progress=False) == len({(b.key, b.in_shape) for b in blocks})
    assert table.measure_missing(blocks, progress=False) == 0  # nothing left to measure
    prediction = table.predict(spec)
    entries = table.entries()
    expected = sum(entries[(b.key, b.in_shape)].median_ms for b in blocks)
    assert prediction.latency_ms == pytest.approx(expected)
    assert prediction.measured and prediction.source == "measured (cpu table)"
    assert sum(prediction.breakdown_ms().values()) == pytest.approx(expected)
    assert list(prediction.breakdown_ms()) == ["stem", "stage0", "stage1", "stage2", "head"]
    # a reopened table sees the committed entries
    again = _table(tmp_path)
    assert again.predict(spec).latency_ms == pytest.approx(expected)


def test_partly_measured_prediction_says_so(tmp_path) -> None:
    table = _table(tmp_path)
    table.measure_missing(decompose(TINY_ARCHS["tiny_window"], 32), progress=False)
    prediction = table.predict(TINY_ARCHS["tiny_conv"])  # shares the stem and head with tiny_window
    measured = sum(b.source == "measured" for b in prediction.blocks)
    assert 0 < measured < len(prediction.blocks)
    assert prediction.source.startswith(f"measured {measured}/{len(prediction.blocks)} blocks, the rest estimated")
    assert all(b.latency_ms > 0 for b in prediction.blocks)


def test_a_cpu_table_without_entries_at_its_settings_names_the_measure_command_that_fills_it(tmp_path) -> None:
    with pytest.raises(EstimationError, match=rf"measure --target cpu --latency-db {tmp_path / 'cpu.sqlite'} "):
        _table(tmp_path).require_estimable()  # an empty table of the user's: its own --latency-db
    shipped = table_module.open_table("cpu", dtype="fp16", batch=3, resolution=32, create=False)
    with pytest.raises(EstimationError, match=r"0 entries at fp16, batch 3, .*measure --target cpu --dtype fp16 "
                                              r"--batch 3 --archs 20\)$"):
        shipped.require_estimable()  # the shipped table: no --latency-db in the hint
    table_module.open_table("cpu", resolution=32, create=False).require_estimable()  # the shipped settings


def test_a100_without_measurements_is_estimated_from_the_shipped_calibration(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(table_module, "default_db_path", lambda name: tmp_path / f"shipped-{name}.sqlite")
    table = _table(tmp_path, "a100", resolution=64)
    prediction = table.predict(TINY_ARCHS["tiny_strip"])
    assert prediction.source.startswith("estimated: compiled runtime, calibrated on public timm benchmarks of ")
    assert prediction.source.endswith("transferred to a100 by its specs")
    assert 0.001 < prediction.latency_ms < 10
    eager = LatencyTable(table.target, table.db, default_settings(get_target("a100"), resolution=64,
                                                                  runtime="eager")).predict(TINY_ARCHS["tiny_strip"])
    assert eager.source.startswith("estimated: eager runtime")
    assert eager.latency_ms > prediction.latency_ms  # more kernels, each dispatched at a higher cost


@pytest.mark.skipif(not COUNTS_FILE.exists(), reason="no shipped block costs")
def test_a_gpu_estimate_at_batch_1024_is_a_lookup_of_the_shipped_costs(tmp_path, monkeypatch) -> None:
    from latency_tables import block_costs

    def no_counting(block, variant):
        raise AssertionError(f"counted {block.key} although its costs are shipped")
    monkeypatch.setattr(block_costs, "_count_profiles", no_counting)
    single = _table(tmp_path, "h100", resolution=224)
    batched = LatencyTable(single.target, single.db, dataclasses.replace(single.settings, batch=1024))
    one, many = (t.predict(REFERENCE_ARCHS["swin_t_like"]).latency_ms for t in (single, batched))
    assert many > 10 * one  # batch 1 is bound by dispatching its kernels; 1024 images by compute and memory


def test_measuring_a_gpu_target_here_is_refused(tmp_path) -> None:
    table = _table(tmp_path, "h100", resolution=32)
    with pytest.raises(TargetUnavailableError, match="needs an NVIDIA H100"):
        table.measure_missing(decompose(TINY_ARCHS["tiny_conv"], 32), progress=False)
    assert table.db.count() == 0


def test_reference_archs_decompose_at_224() -> None:
    for spec in REFERENCE_ARCHS.values():
        assert sum(b.role == "block" for b in decompose(spec, 224)) == sum(s.depth for s in spec.stages)


@pytest.mark.parametrize("old_fit", [
    {"scale": 1.2, "per_block_ms": 0.0},
    {"scale": 1.146, "per_weight_mb": 0.0004},  # network = sum x (scale + per_weight_mb x MB), until 2026-11-21
])
def test_an_older_stored_correction_is_ignored_not_fatal(tmp_path, old_fit) -> None:
    table = _table(tmp_path)
    old = {"fit": {**old_fit, "networks": 3, "median_abs_err_before": 0.1, "median_abs_err_after": 0.05}}
    table.db.set_info(table._correction_key, json.dumps(old))
    assert _table(tmp_path).correction() is None


def test_fitted_correction_is_stored_and_applied(tmp_path) -> None:
    table = _table(tmp_path)
    specs = [TINY_ARCHS["tiny_conv"], TINY_ARCHS["tiny_window"], TINY_ARCHS["tiny_qna"]]
    fit = table.fit_correction(specs, progress=False)
    raw = sum(table.entries()[(b.key, b.in_shape)].median_ms for b in decompose(specs[0], 32))
    reopened = _table(tmp_path)  # the fit lives in the database
    assert reopened.correction() == fit
    prediction = reopened.predict(specs[0])
    blocks = decompose(specs[0], 32)
    expected = fit.scale * raw + fit.ms_per_weight_mb * weights_mb(blocks, "fp32") + \
        fit.ms_per_activation_mb * activations_mb(blocks, 1, "fp32")
    assert prediction.latency_ms == pytest.approx(expected)
    assert sum(part.latency_ms for part in prediction.blocks) == pytest.approx(expected)
    assert prediction.source == "measured (cpu table); additivity-corrected on 3 networks"


def test_correction_stored_from_given_network_times_fits_them(tmp_path) -> None:
    table = _table(tmp_path)
    specs = [TINY_ARCHS["tiny_conv"], TINY_ARCHS["tiny_window"], TINY_ARCHS["tiny_qna"], TINY_ARCHS["tiny_linear"]]
    table.measure_missing([b for spec in specs for b in decompose(spec, 32)], progress=False)
    sums = [sum(table.entries()[(b.key, b.in_shape)].median_ms for b in decompose(spec, 32)) for spec in specs]
    fit = table.store_correction(specs, [1.7 * total for total in sums])  # networks timed elsewhere, 1.7x the sum
    assert fit.scale == pytest.approx(1.7) and fit.ms_per_weight_mb == pytest.approx(0, abs=1e-9)
    assert fit.networks == 4 and fit.median_abs_err_after == pytest.approx(0, abs=1e-9)
    assert _table(tmp_path).predict(specs[1]).latency_ms == pytest.approx(1.7 * sums[1])
    with pytest.raises(ValueError):
        table.store_correction(specs, [1.0, 2.0])  # a time per network


def test_drift_of_a_fresh_table_is_near_one_and_of_a_doctored_one_is_not(tmp_path) -> None:
    table = _table(tmp_path)
    table.measure_missing(decompose(TINY_ARCHS["tiny_conv"], 32), progress=False)
    fresh = table.drift(sample=5)
    assert fresh.what == "entries" and fresh.timed == 5 and fresh.p20 <= fresh.ratio <= fresh.p80
    assert 0.25 < fresh.ratio < 4  # same machine, seconds apart: near 1, within what a busy 2-core VM does
    for key, measurement in table.entries().items():  # as if measured on a machine 10x faster
        table.entries()[key] = dataclasses.replace(measurement, median_ms=measurement.median_ms / 10,
                                                   p20_ms=measurement.p20_ms / 10, p80_ms=measurement.p80_ms / 10)
    assert table.drift(sample=5).ratio > 4 * fresh.ratio


def test_network_drift_times_the_correction_networks_against_their_fitted_times(tmp_path) -> None:
    table = _table(tmp_path)
    assert table.network_drift() is None and table.correction_networks() == []  # no correction yet
    specs = [TINY_ARCHS["tiny_conv"], TINY_ARCHS["tiny_window"], TINY_ARCHS["tiny_qna"]]
    table.fit_correction(specs, progress=False, passes=1)
    stored = _table(tmp_path).correction_networks()
    assert [spec for spec, _ in stored] == specs and all(ms > 0 for _, ms in stored)
    fresh = table.network_drift(sample=2)
    assert fresh.what == "networks" and fresh.timed == 2 and fresh.p20 <= fresh.ratio <= fresh.p80
    assert 0.25 < fresh.ratio < 4
    record = json.loads(table.db.get_info(table._correction_key))
    record["samples"] = [[*sample[:3], sample[3] / 10] for sample in record["samples"]]  # fitted 10x faster
    table.db.set_info(table._correction_key, json.dumps(record))
    assert table.network_drift(sample=5).timed == 3 and table.network_drift().ratio > 4 * fresh.ratio
    del record["specs"]  # a correction stored before the networks' specs were
    table.db.set_info(table._correction_key, json.dumps(record))
    assert table.network_drift() is None


def test_drift_of_an_empty_table_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(EstimationError, match="no entries to check"):
        _table(tmp_path).drift()


def test_entries_are_the_median_of_passes_over_a_chunk(tmp_path, monkeypatch) -> None:
    settings = dataclasses.replace(default_settings(get_target("cpu"), resolution=32), passes=3)
    table = LatencyTable(get_target("cpu"), LatencyDB(tmp_path / "cpu.sqlite"), settings)
    blocks = table.missing(decompose(TINY_ARCHS["tiny_window"], 32))
    calls: list[str] = []
    index = {b.key: i for i, b in enumerate(blocks)}

    def fake_time_block(block, settings, device):  # block i's passes take (i + 1) x 1, 10, 3 ms
        calls.append(block.key)
        return Timing((index[block.key] + 1) * [1.0, 10.0, 3.0][calls.count(block.key) - 1], 0.5, 99.0, 10)
    monkeypatch.setattr(table_module, "MEASURE_CHUNK", 2)
    monkeypatch.setattr(table_module, "time_block", fake_time_block)
    assert table.measure_missing(blocks, progress=False) == len(blocks)
    order = [b.key for b in blocks]
    random.Random(0).shuffle(order)  # measured in a seeded shuffled order, not the listed one
    assert order != [b.key for b in blocks]
    assert calls[:6] == order[:2] * 3 and calls[6:12] == order[2:4] * 3  # a chunk's blocks, pass after pass
    stored = [_table(tmp_path).entries()[(b.key, b.in_shape)] for b in blocks]
    assert all(m.repeats == 30 and m.p20_ms == 0.5 and m.p80_ms == 99.0 for m in stored)
    assert [m.median_ms for m in stored] == [3.0 * (i + 1) for i in range(len(blocks))]  # median of its passes
    assert stored[0].settings["passes"] == 3


def test_measure_network_takes_the_median_of_its_passes(tmp_path, monkeypatch) -> None:
    timings = iter([Timing(5.0, 4.0, 6.0, 10), Timing(9.0, 8.0, 9.5, 10), Timing(7.0, 6.5, 7.5, 12)])
    monkeypatch.setattr(table_module, "time_network", lambda spec, settings, device: next(timings))
    table = _table(tmp_path)
    assert table.measure_network(TINY_ARCHS["tiny_window"], passes=3) == Timing(7.0, 6.5, 7.5, 32)
    with pytest.raises(ValueError, match="passes must be >= 1"):
        table.measure_network(TINY_ARCHS["tiny_window"], passes=0)
