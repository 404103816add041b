"""Roofline estimates of block latency, calibrated on measured entries.

A block's cost is its FLOPs (multiply-adds of matmuls, convolutions and attention, as `torch.utils.flop_counter`
counts them), the bytes it moves (input and weights once, plus every op's output written and read once) and its
number of ops (each one a kernel launch or a CPU dispatch), all counted in one forward on the meta device. Its latency is
``max(flops / F, bytes / B) + ops * L`` with effective rates F (FLOP/s) and B (bytes/s) and a per-op cost L.
`calibrate` fits (F, B, L) to measured entries of one target; `Roofline.transfer` moves a fit to another target by
the ratio of the targets' peak rates (and takes that target's launch cost); without any fit, a GPU target gets
50% of its peak FLOP/s and 70% of its bandwidth.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from latency_tables.blocks import Block
from latency_tables.cost_cache import Counts, stored_counts
from latency_tables.measure import DTYPES
from latency_tables.targets import Target

__all__ = ["BlockCost", "Roofline", "block_cost", "calibrate", "count_block", "default_roofline", "EstimationError"]

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


class EstimationError(ValueError):
    """No estimate can be made (e.g. a CPU target without measured entries to calibrate on)."""


@dataclass(frozen=True)
class BlockCost:
    flops: float  # multiply-adds
    bytes: float
    ops: int


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops a forward runs (views and allocations excluded) and the elements they write."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view and func.overloadpacket.__name__ not in _NO_KERNEL_OPS:
            self.ops += 1
            for tensor in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(tensor, torch.Tensor):
                    self.elements += tensor.numel()
        return out


# ops that launch no kernel of their own (metadata, allocation, scalar reads)
_NO_KERNEL_OPS = frozenset({"detach", "lift_fresh", "empty", "empty_like", "empty_strided", "zeros", "ones", "full",
                            "arange", "scalar_tensor", "new_empty", "new_zeros", "new_ones", "_local_scalar_dense",
                            "alias", "_to_copy"})


def _count(block: Block, batch: int, device: torch.device) -> Counts:
    """``(multiply-adds, ops, elements written, input elements + parameters)`` of one forward of `block`."""
    with device:
        module = block.build().eval()
    example = block.example_input(batch).to(device)
    counter, flop_counter = _OpCounter(), FlopCounterMode(display=False)
    with torch.no_grad(), flop_counter, counter:
        module(example)
    params = sum(p.numel() for p in module.parameters())
    return flop_counter.get_total_flops() / 2, counter.ops, counter.elements, params + example.numel()


def count_block(block: Block, batch: int) -> Counts:
    """`_count` on the meta device (~13 ms a block: nothing is allocated or computed, 25x faster than a jit
    trace); a block whose forward needs real values falls back to the CPU."""
    try:
        return _count(block, batch, torch.device("meta"))
    except (NotImplementedError, RuntimeError):
        return _count(block, batch, torch.device("cpu"))


@functools.lru_cache(maxsize=65536)
def _block_cost_cached(block: Block, batch: int, dtype: str) -> BlockCost:
    counts = stored_counts().get((block.key, block.in_shape, batch)) or count_block(block, batch)
    flops, ops, written, read = counts
    return BlockCost(float(flops), float(DTYPE_BYTES[dtype] * (read + 2 * written)), ops)


def block_cost(block: Block, batch: int, dtype: str) -> BlockCost:
    """FLOPs, bytes moved and op count of `block` for a batch of `batch` in `dtype` (cached per process)."""
    if dtype not in DTYPES:
        raise EstimationError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return _block_cost_cached(block, batch, dtype)


@dataclass(frozen=True)
class Roofline:
    """Effective rates of one target: ``latency = max(flops / flops_per_s, bytes / bytes_per_s) + ops * op_s``."""
    target: str
    flops_per_s: float  # multiply-adds per second
    bytes_per_s: float
    op_s: float
    calibrated_on: str  # e.g. "412 measured cpu entries" or "no measurements: 50% of peak FLOP/s, 70% of bandwidth"

    def predict_ms(self, cost: BlockCost) -> float:
        return 1e3 * (max(cost.flops / self.flops_per_s, cost.bytes / self.bytes_per_s) + cost.ops * self.op_s)

    def transfer(self, source: Target, destination: Target, dtype: str) -> Roofline:
        """This fit moved to `destination` by the ratio of peak FLOP/s and bandwidth; its launch cost taken."""
        src_flops, dst_flops = source.peak_flops.get(dtype), destination.peak_flops.get(dtype)
        src_bw, dst_bw = source.memory_bandwidth_bytes_per_s, destination.memory_bandwidth_bytes_per_s
        if not (src_flops and dst_flops and src_bw and dst_bw):
            raise EstimationError(f"cannot move a {source.name} calibration to {destination.name} in {dtype}: "
                                  f"peak FLOP/s or bandwidth unknown for one of them")
        return replace(self, target=destination.name, flops_per_s=self.flops_per_s * dst_flops / src_flops,
                       bytes_per_s=self.bytes_per_s * dst_bw / src_bw, op_s=destination.launch_overhead_us * 1e-6,
                       calibrated_on=f"{self.calibrated_on}, scaled to {destination.name} by peak rates")


def default_roofline(target: Target, dtype: str) -> Roofline:
    peak, bandwidth = target.peak_flops.get(dtype), target.memory_bandwidth_bytes_per_s
    if not (peak and bandwidth):
        raise EstimationError(f"target {target.name!r} has no public peak rates for {dtype}; measure it first "
                              f"(python launch.py measure --target {target.name})")
    return Roofline(target.name, 0.5 * peak / 2, 0.7 * bandwidth, target.launch_overhead_us * 1e-6,
                    "no measurements: 50% of peak FLOP/s, 70% of bandwidth")


def calibrate(samples: list[tuple[BlockCost, float]], target: str) -> Roofline:
    """Fit (F, B, L) to measured ``(cost, latency_ms)`` pairs, minimising squared log error (coordinate search)."""
    if len(samples) < 3:
        raise EstimationError(f"need at least 3 measured entries of {target} to calibrate, got {len(samples)}")
    flops = np.array([c.flops for c, _ in samples])
    moved = np.array([c.bytes for c, _ in samples])
    ops = np.array([c.ops for c, _ in samples], dtype=float)
    measured_s = np.array([ms for _, ms in samples]) * 1e-3

    def loss(log_params: np.ndarray) -> float:
        f, b, l = np.exp(log_params)
        predicted = np.maximum(flops / f, moved / b) + ops * l
        return float(np.mean((np.log(predicted) - np.log(measured_s)) ** 2))

    def descend(start: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, float]:
        best, best_loss, step = start, loss(start), 1.0
        while step > 1e-4:
            improved = False
            for axis in axes:
                for direction in (1.0, -1.0):
                    trial = best.copy()
                    trial[axis] += direction * step
                    trial_loss = loss(trial)
                    if trial_loss < best_loss:
                        best, best_loss, improved = trial, trial_loss, True
            if not improved:
                step /= 2
        return best, best_loss

    # The per-op cost is weakly determined next to the rates: try it on a grid (rates descended for each), then
    # refine all three from the best start. Rates start where they would explain the median entry alone.
    rates = np.log([np.median(flops / measured_s), np.median(moved / measured_s)])
    starts = [descend(np.array([*rates, np.log(l)]), (0, 1)) for l in np.logspace(-8, -2, 13)]
    best, _ = descend(min(starts, key=lambda item: item[1])[0], (0, 1, 2))
    f, b, l = np.exp(best)
    return Roofline(target, float(f), float(b), float(l), f"{len(samples)} measured {target} entries")
