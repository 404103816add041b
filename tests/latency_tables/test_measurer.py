"""Measuring into a table on its own device: missing entries, the additivity correction, drift, model-card timings."""
from __future__ import annotations

import dataclasses
import json
import random

import pytest

from latency_tables import measurer as measurer_module
from latency_tables.blocks import decompose
from latency_tables.correction import activations_mb, weights_mb
from latency_tables.estimate import EstimationError
from latency_tables.measure import Timing
from latency_tables.measurer import TableMeasurer
from latency_tables.storage import LatencyDB
from latency_tables.table import LatencyTable, default_settings
from latency_tables.targets import TargetUnavailableError, get_target
from search_spaces import TINY_ARCHS


def _table(tmp_path, target: str = "cpu", resolution: int = 32) -> LatencyTable:
    settings = default_settings(get_target(target), resolution=resolution)
    return LatencyTable(get_target(target), LatencyDB(tmp_path / f"{target}.sqlite"), settings)


def test_measuring_a_gpu_target_here_is_refused(tmp_path) -> None:
    table = _table(tmp_path, "h100", resolution=32)
    with pytest.raises(TargetUnavailableError, match="needs an NVIDIA H100"):
        TableMeasurer(table).measure_missing(decompose(TINY_ARCHS["tiny_conv"], 32), progress=False)
    assert table.db.count() == 0


def test_fitted_correction_is_stored_and_applied(tmp_path) -> None:
    table = _table(tmp_path)
    specs = [TINY_ARCHS["tiny_conv"], TINY_ARCHS["tiny_window"], TINY_ARCHS["tiny_qna"]]
    fit = TableMeasurer(table).fit_correction(specs, progress=False)
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
    TableMeasurer(table).measure_missing([b for spec in specs for b in decompose(spec, 32)], progress=False)
    sums = [sum(table.entries()[(b.key, b.in_shape)].median_ms for b in decompose(spec, 32)) for spec in specs]
    fit = TableMeasurer(table).store_correction(specs, [1.7 * total for total in sums])  # networks timed elsewhere, 1.7x the sum
    assert fit.scale == pytest.approx(1.7) and fit.ms_per_weight_mb == pytest.approx(0, abs=1e-9)
    assert fit.networks == 4 and fit.median_abs_err_after == pytest.approx(0, abs=1e-9)
    assert _table(tmp_path).predict(specs[1]).latency_ms == pytest.approx(1.7 * sums[1])
    with pytest.raises(ValueError):
        TableMeasurer(table).store_correction(specs, [1.0, 2.0])  # a time per network


def test_drift_of_a_fresh_table_is_near_one_and_of_a_doctored_one_is_not(tmp_path) -> None:
    table = _table(tmp_path)
    TableMeasurer(table).measure_missing(decompose(TINY_ARCHS["tiny_conv"], 32), progress=False)
    fresh = TableMeasurer(table).drift(sample=5)
    assert fresh.what == "entries" and fresh.timed == 5 and fresh.p20 <= fresh.ratio <= fresh.p80
    assert 0.25 < fresh.ratio < 4  # same machine, seconds apart: near 1, within what a busy 2-core VM does
    for key, measurement in table.entries().items():  # as if measured on a machine 10x faster
        table.entries()[key] = dataclasses.replace(measurement, median_ms=measurement.median_ms / 10,
                                                   p20_ms=measurement.p20_ms / 10, p80_ms=measurement.p80_ms / 10)
    assert TableMeasurer(table).drift(sample=5).ratio > 4 * fresh.ratio


def test_network_drift_times_the_correction_networks_against_their_fitted_times(tmp_path) -> None:
    table = _table(tmp_path)
    assert TableMeasurer(table).network_drift() is None and table.correction_networks() == []  # no correction yet
    specs = [TINY_ARCHS["tiny_conv"], TINY_ARCHS["tiny_window"], TINY_ARCHS["tiny_qna"]]
    TableMeasurer(table).fit_correction(specs, progress=False, passes=1)
    stored = _table(tmp_path).correction_networks()
    assert [spec for spec, _ in stored] == specs and all(ms > 0 for _, ms in stored)
    fresh = TableMeasurer(table).network_drift(sample=2)
    assert fresh.what == "networks" and fresh.timed == 2 and fresh.p20 <= fresh.ratio <= fresh.p80
    assert 0.25 < fresh.ratio < 4
    record = json.loads(table.db.get_info(table.correction_key))
    record["samples"] = [[*sample[:3], sample[3] / 10] for sample in record["samples"]]  # fitted 10x faster
    table.db.set_info(table.correction_key, json.dumps(record))
    table.forget()  # written behind the table's back: drop what it had read
    assert TableMeasurer(table).network_drift(sample=5).timed == 3 and TableMeasurer(table).network_drift().ratio > 4 * fresh.ratio
    del record["specs"]  # a correction stored before the networks' specs were
    table.db.set_info(table.correction_key, json.dumps(record))
    table.forget()
    assert TableMeasurer(table).network_drift() is None


def test_drift_of_an_empty_table_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(EstimationError, match="no entries to check"):
        TableMeasurer(_table(tmp_path)).drift()


def test_entries_are_the_median_of_passes_over_a_chunk(tmp_path, monkeypatch) -> None:
    settings = dataclasses.replace(default_settings(get_target("cpu"), resolution=32), passes=3)
    table = LatencyTable(get_target("cpu"), LatencyDB(tmp_path / "cpu.sqlite"), settings)
    blocks = table.missing(decompose(TINY_ARCHS["tiny_window"], 32))
    calls: list[str] = []
    index = {b.key: i for i, b in enumerate(blocks)}

    def fake_time_block(block, settings, device):  # block i's passes take (i + 1) x 1, 10, 3 ms
        calls.append(block.key)
        return Timing((index[block.key] + 1) * [1.0, 10.0, 3.0][calls.count(block.key) - 1], 0.5, 99.0, 10)
    monkeypatch.setattr(measurer_module, "MEASURE_CHUNK", 2)
    monkeypatch.setattr(measurer_module, "time_block", fake_time_block)
    assert TableMeasurer(table).measure_missing(blocks, progress=False) == len(blocks)
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
    monkeypatch.setattr(measurer_module, "time_network", lambda spec, settings, device: next(timings))
    table = _table(tmp_path)
    assert TableMeasurer(table).measure_network(TINY_ARCHS["tiny_window"], passes=3) == Timing(7.0, 6.5, 7.5, 32)
    with pytest.raises(ValueError, match="passes must be >= 1"):
        TableMeasurer(table).measure_network(TINY_ARCHS["tiny_window"], passes=0)
