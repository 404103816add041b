"""Timing helpers: quantiles, repeat bounds, thread count restored, cache flush between repeats."""
from __future__ import annotations

import time

import torch

from latency_tables.measure import MeasureSettings, time_callable, time_module


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
