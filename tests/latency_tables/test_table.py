"""Lookup of architectures in a table (filled by `TableMeasurer`), and estimation with its label."""
from __future__ import annotations

import dataclasses
import json

import pytest

from latency_tables import table as table_module
from latency_tables.block_costs import COUNTS_FILE
from latency_tables.blocks import decompose
from latency_tables.estimate import EstimationError
from latency_tables.measurer import TableMeasurer
from latency_tables.storage import LatencyDB
from latency_tables.table import LatencyTable, default_settings
from latency_tables.targets import get_target
from search_spaces import REFERENCE_ARCHS, TINY_ARCHS


def _table(tmp_path, target: str = "cpu", resolution: int = 32) -> LatencyTable:
    settings = default_settings(get_target(target), resolution=resolution)
    return LatencyTable(get_target(target), LatencyDB(tmp_path / f"{target}.sqlite"), settings)


def test_measured_prediction_is_the_sum_of_entries(tmp_path) -> None:
    table = _table(tmp_path)
    spec = TINY_ARCHS["tiny_window"]
    blocks = decompose(spec, 32)
    assert TableMeasurer(table).measure_missing(blocks, progress=False) == len({(b.key, b.in_shape) for b in blocks})
    assert TableMeasurer(table).measure_missing(blocks, progress=False) == 0  # nothing left to measure
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
    TableMeasurer(table).measure_missing(decompose(TINY_ARCHS["tiny_window"], 32), progress=False)
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
    table.db.set_info(table.correction_key, json.dumps(old))
    assert _table(tmp_path).correction() is None
