"""A CPU table checked against this machine: trusted when just measured here, refused on a 1.9x slower machine,
re-measured on request (the machine's speed faked through the measurer's timing functions)."""
from __future__ import annotations

import datetime

import pytest

from latency_tables.blocks import decompose
from latency_tables import measurer as measurer_module
from latency_tables.freshness import FIT_TOLERANCE, check_fit, remeasure_seconds
from latency_tables.measure import Timing
from latency_tables.measurer import TableMeasurer
from latency_tables.table import LatencyTable, default_settings
from latency_tables.storage import LatencyDB, Measurement
from latency_tables.targets import get_target
from search_spaces import TINY_ARCHS

RESOLUTION = 32
SPECS = [TINY_ARCHS[name] for name in ("tiny_window", "tiny_conv", "tiny_strip")]
WEEK_AGO = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=7)


def stored_table(tmp_path, measured_at: datetime.datetime = WEEK_AGO) -> LatencyTable:
    """A cpu table of `SPECS`'s blocks (entry i: 0.1 + 0.01 i ms), its correction fitted on the three networks
    at 1.2x the sum of their entries; every entry stored as measured at `measured_at`."""
    target = get_target("cpu")
    table = LatencyTable(target, LatencyDB(tmp_path / "cpu.sqlite"), default_settings(target, resolution=RESOLUTION))
    measurer = TableMeasurer(table)
    blocks = {(b.key, b.in_shape): b for spec in SPECS for b in decompose(spec, RESOLUTION)}
    for index, block in enumerate(blocks.values()):
        ms = 0.1 + 0.01 * index
        table.db.put(measurer.entry_key(block), Measurement(median_ms=ms, p20_ms=ms, p80_ms=ms, repeats=10,
                                                            threads=2, settings={}, measured_at=measured_at))
    table.forget()
    measurer.store_correction(SPECS, [1.2 * table.correction_inputs(spec)[0] for spec in SPECS])
    return table


def machine_at(monkeypatch, table: LatencyTable, slowdown: float) -> list[str]:
    """Make every block and network of `table` time at `slowdown` x its stored time (other networks 1 ms x
    `slowdown`); returns what was timed."""
    entries = {key: m.median_ms for key, m in table.entries().items()}
    networks = {spec.digest(): ms for spec, ms in table.correction_networks()}
    timed: list[str] = []

    def timing(ms: float) -> Timing:
        return Timing(median_ms=ms * slowdown, p20_ms=ms * slowdown, p80_ms=ms * slowdown, repeats=10)

    def block(block, settings, device):
        timed.append("block")
        return timing(entries[(block.key, block.in_shape)])

    def network(spec, settings, device):
        timed.append("network")
        return timing(networks.get(spec.digest(), 1.0))  # an exported network: 1 ms

    def networks_in_passes(specs, settings, device, passes, on_timing=None):
        return [network(spec, settings, device).median_ms for spec in specs]

    monkeypatch.setattr(measurer_module, "time_block", block)
    monkeypatch.setattr(measurer_module, "time_network", network)
    monkeypatch.setattr(measurer_module, "time_networks", networks_in_passes)
    return timed


def test_a_table_this_machine_just_measured_is_trusted_without_timing(tmp_path, monkeypatch):
    table = stored_table(tmp_path, measured_at=datetime.datetime.now(datetime.timezone.utc))
    timed = machine_at(monkeypatch, table, 1.9)
    fit = check_fit(table)
    assert fit.fits and "measured on this machine 0 min ago" in fit.summary and timed == []


def test_an_old_table_on_a_machine_of_its_speed_fits(tmp_path, monkeypatch):
    table = stored_table(tmp_path)
    timed = machine_at(monkeypatch, table, 1.1)
    fit = check_fit(table)
    assert fit.fits and fit.entries.ratio == pytest.approx(1.1) and fit.networks.ratio == pytest.approx(1.1)
    assert timed.count("network") == 1 and 1 <= timed.count("block") <= 6


def test_a_1_9x_slower_machine_does_not_fit_and_says_how_far_off(tmp_path, monkeypatch):
    table = stored_table(tmp_path)
    machine_at(monkeypatch, table, 1.9)
    fit = check_fit(table)
    assert not fit.fits and fit.networks.ratio == pytest.approx(1.9)
    assert "does not fit this machine now" in fit.summary and "1.90x" in fit.summary
    assert f"±{FIT_TOLERANCE:.0%}" in fit.summary


def test_a_gpu_table_or_an_empty_one_has_nothing_to_check(tmp_path):
    gpu = get_target("a100")
    assert check_fit(LatencyTable(gpu, LatencyDB("sqlite://"), default_settings(gpu))) is None
    cpu = get_target("cpu")
    assert check_fit(LatencyTable(cpu, LatencyDB("sqlite://"), default_settings(cpu))) is None


def test_remeasure_times_every_entry_again_and_refits_the_correction(tmp_path, monkeypatch):
    table = stored_table(tmp_path)
    before = {key: m.median_ms for key, m in table.entries().items()}
    predicted_before = table.predict(SPECS[0]).latency_ms
    # repeats to reach 0.3 s of a 0.1-0.3 ms block are capped at 50: (3 warm-up + 50) x ms, 3 passes
    expected_s = sum(53 * ms / 1000 for ms in before.values()) * 3 + sum(
        53 * ms / 1000 for _, ms in table.correction_networks()) * 3
    assert remeasure_seconds(table) == pytest.approx(expected_s)
    machine_at(monkeypatch, table, 1.9)
    assert TableMeasurer(table).remeasure(progress=False) == len(before)
    again = LatencyTable(table.target, LatencyDB(tmp_path / "cpu.sqlite"), table.settings)
    assert {key: m.median_ms for key, m in again.entries().items()} == pytest.approx(
        {key: 1.9 * ms for key, ms in before.items()})
    assert again.predict(SPECS[0]).latency_ms == pytest.approx(1.9 * predicted_before, rel=1e-6)
    assert check_fit(again).fits  # measured here just now
