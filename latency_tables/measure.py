"""Timing of blocks and whole networks on the current device.

CPU: a fixed number of intra-op threads (recorded), warm-up, then repeats timed one by one with
`time.perf_counter`; the median with p20/p80. GPU: `triton.testing.do_bench` (CUDA events, L2 flushed between
repeats) with ``return_mode="median"`` and quantiles. Everything runs under `torch.inference_mode`, so the
attention mixers take their Triton kernels on CUDA.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from common.dtypes import torch_dtype
from latency_tables.blocks import Block
from search_spaces import ArchSpec, build_model, fold_batchnorm

__all__ = ["MeasureSettings", "Timing", "quick_settings", "time_block", "time_callable", "time_module", "time_network",
           "time_networks", "combine_passes"]


@dataclass(frozen=True)
class MeasureSettings:
    """How entries are measured; stored with every entry. `threads` applies to the CPU only."""
    batch: int = 1
    resolution: int = 224
    dtype: str = "fp32"
    implementation: str = "torch"  # "triton" on GPUs: the attention mixers on the project's kernels
    runtime: str = "eager"  # "compiled": timed under torch.compile (GPU targets' default runtime)
    warmup: int = 3
    min_repeats: int = 10
    max_repeats: int = 50
    min_time_s: float = 0.3  # keep repeating (up to max_repeats) until this much time was timed
    threads: int = 2
    flush_cache_mb: int = 16  # CPU: written before every repeat so weights come from memory as in a full
    # network (2x this machine's 2x4 MiB L2); the input is then read once, as if a neighbour had just written it
    passes: int = 1  # timings of each entry, spread over a chunk of entries; the entry is their median
    fold_batchnorm: bool = True  # time blocks and networks as deployed (`search_spaces.fold_batchnorm`)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def stored_implementation(self) -> str:
        """What a table's ``implementation`` column holds: ``triton``, ``torch``, or ``triton+compiled`` etc."""
        return self.implementation if self.runtime == "eager" else f"{self.implementation}+{self.runtime}"


def quick_settings(settings: MeasureSettings, repeats: int) -> MeasureSettings:
    """`settings` timed with exactly `repeats` repeats (at most 3 warm-up calls): quicker, noisier tables."""
    return dataclasses.replace(settings, warmup=min(repeats, 3), min_repeats=repeats, max_repeats=repeats,
                               min_time_s=0.0, passes=1)


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    repeats: int


def combine_passes(timings: list[Timing]) -> Timing:
    """One timing of several passes over the same thing: the median of each statistic, the repeats summed."""
    return Timing(statistics.median(t.median_ms for t in timings), statistics.median(t.p20_ms for t in timings),
                  statistics.median(t.p80_ms for t in timings), sum(t.repeats for t in timings))


def _quantile(sorted_values: list[float], q: float) -> float:
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def time_callable(fn: Callable[[], object], settings: MeasureSettings, device: torch.device,
                  before_each: Callable[[], object] | None = None) -> Timing:
    """Median/p20/p80 wall time of ``fn()`` in ms (CUDA: `do_bench`, which flushes L2 itself; CPU: per-call
    `perf_counter`, with ``before_each()`` run untimed before every call)."""
    if device.type == "cuda":
        from triton.testing import do_bench
        times = sorted(float(t) for t in do_bench(fn, warmup=25, rep=100, return_mode="all"))
        return Timing(statistics.median(times), _quantile(times, 0.2), _quantile(times, 0.8), len(times))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        for _ in range(settings.warmup):
            fn()
        times: list[float] = []
        total = 0.0
        while len(times) < settings.max_repeats and (len(times) < settings.min_repeats or total < settings.min_time_s):
            if before_each is not None:
                before_each()
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            times.append(elapsed * 1e3)
            total += elapsed
    finally:
        torch.set_num_threads(previous_threads)
    times.sort()
    return Timing(statistics.median(times), _quantile(times, 0.2), _quantile(times, 0.8), len(times))


def _cache_flusher(example: torch.Tensor, flush_mb: int) -> Callable[[], object] | None:
    """Untimed step before each CPU repeat: evict the module's weights from the private caches by writing
    `flush_mb` MiB, then read the input back in, as the layer before it would have just written it."""
    if flush_mb <= 0:
        return None
    flush = torch.empty(flush_mb * 2**20 // 4, dtype=torch.float32)

    def flush_then_touch_input() -> None:
        flush.fill_(1.0)
        example.sum()
    return flush_then_touch_input


def time_module(module: nn.Module, example: torch.Tensor, settings: MeasureSettings,
                device: torch.device | None = None) -> Timing:
    """Time ``module(example)`` in eval mode and `settings.dtype` on `device` (default: the example's)."""
    device = device or example.device
    module = module.to(device=device, dtype=torch_dtype(settings.dtype)).eval()
    if settings.runtime == "compiled":
        module = torch.compile(module)
    example = example.to(device=device, dtype=torch_dtype(settings.dtype))
    before_each = _cache_flusher(example, settings.flush_cache_mb) if device.type == "cpu" else None
    with torch.inference_mode():
        return time_callable(lambda: module(example), settings, device, before_each)


def _deployed(module: nn.Module, settings: MeasureSettings) -> nn.Module:
    return fold_batchnorm(module) if settings.fold_batchnorm else module


def time_block(block: Block, settings: MeasureSettings, device: torch.device) -> Timing:
    """Time `block` alone, as a table entry is measured: weights from seed 0, a random input of its shape,
    BatchNorm folded as deployed (``settings.fold_batchnorm``)."""
    torch.manual_seed(0)
    return time_module(_deployed(block.build(), settings), block.example_input(settings.batch), settings, device)


def time_network(spec: ArchSpec, settings: MeasureSettings, device: torch.device) -> Timing:
    """Time `spec` end to end on a seeded random ``[batch, 3, resolution, resolution]`` input, BatchNorm folded as
    deployed (``settings.fold_batchnorm``)."""
    torch.manual_seed(0)
    example = torch.randn(settings.batch, 3, settings.resolution, settings.resolution)
    return time_module(_deployed(build_model(spec), settings), example, settings, device)


def time_networks(specs: list[ArchSpec], settings: MeasureSettings, device: torch.device, passes: int,
                  progress: Callable[[int, int, float], object] | None = None) -> list[float]:
    """Median ms of every spec end to end: the median over `passes` passes over the whole list.

    One `time_network` call times a network within a few hundred ms; a shared CPU changes speed over seconds
    (benchmarks/timing_noise.py), so one call sees the machine in one state. Passes spread each network's
    timings over the whole run, and their median drops the passes spent in a rarer state.
    ``progress(pass_index, spec_index, median_ms)`` is called after every timing.
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    per_pass: list[list[float]] = [[] for _ in specs]
    for pass_index in range(passes):
        for i, spec in enumerate(specs):
            per_pass[i].append(time_network(spec, settings, device).median_ms)
            if progress is not None:
                progress(pass_index, i, per_pass[i][-1])
    return [statistics.median(times) for times in per_pass]
