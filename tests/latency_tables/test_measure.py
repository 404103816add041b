"""Timing helpers: quantiles, repeat bounds, thread count restored, cache flush between repeats, passes."""
from __future__ import annotations

import time

import pytest
import torch

import latency_tables.measure as measure
from latency_tables.measure import MeasureSettings, time_callable, time_module, time_networks
from search_spaces import TINY_ARCHS


def test_time_callable_orders_quantiles_and_respects_bounds() -> None:
    settings = MeasureSettings(warmup=1, min_repeats=5, max_repeats=8, min_time_s=10.0, threads=1)
    durations = iter([0.001, 0.004, 0.002, 0.003, 0.005, 0.001, 0.002, 0.006, 0.003, 0.002] * 2)
    timing = time_callable(lambda: time.sleep(next(durations)), settings, torch.device("cpu"))
    assert timing.repeats == 8  # max_repeats caps it even though min_time_s was not reached
    assert timing.p20_ms <= timing.median_ms <= timing.p80_ms
    assert 1.0 <= timing.median_ms < 10.0


def test_threads_are_set_for_timing_and_restored() -> None:
    seen = []
    before = torch.get_num_threads()
    time_callable(lambda: seen.append(torch.get_num_threads()), MeasureSettings(threads=2, warmup=0, min_repeats=2,
                                                                                max_repeats=2), torch.device("cpu"))
    assert set(seen) == {2} and torch.get_num_threads() == before


def test_time_module_flushes_before_every_repeat(monkeypatch) -> None:
    calls = []
    module = torch.nn.Linear(7, 3)
    original = torch.Tensor.fill_

    def counting_fill(self, value):
        calls.append(self.numel())
        return original(self, value)

    monkeypatch.setattr(torch.Tensor, "fill_", counting_fill)
    settings = MeasureSettings(warmup=0, min_repeats=4, max_repeats=4, flush_cache_mb=1, threads=1)
    timing = time_module(module, torch.randn(5, 7), settings)
    assert timing.repeats == 4 and calls.count(2**20 // 4) == 4


def test_time_networks_takes_the_median_pass_in_round_robin_order(monkeypatch) -> None:
    specs = [TINY_ARCHS["tiny_conv"], TINY_ARCHS["tiny_window"], TINY_ARCHS["tiny_qna"]]
    times = iter([1.0, 10.0, 100.0, 3.0, 20.0, 300.0, 9.0, 30.0, 200.0])  # pass by pass
    order = []
    monkeypatch.setattr(measure, "time_network", lambda spec, settings, device: (
        order.append(spec.name), measure.Timing(next(times), 0.0, 0.0, 1))[1])
    seen = []
    means = measure.time_networks(specs, MeasureSettings(), torch.device("cpu"), passes=3,
                                  progress=lambda p, i, ms: seen.append((p, i, ms)))
    assert means == [3.0, 20.0, 200.0]
    assert order == [s.name for s in specs] * 3
    assert seen[:4] == [(0, 0, 1.0), (0, 1, 10.0), (0, 2, 100.0), (1, 0, 3.0)]


def test_time_networks_rejects_zero_passes() -> None:
    with pytest.raises(ValueError, match="passes must be >= 1"):
        time_networks([], MeasureSettings(), torch.device("cpu"), passes=0)
