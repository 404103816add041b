"""Roofline estimates of block latency, calibrated on measured entries.

A block's cost is its FLOPs (multiply-adds, fvcore), the bytes it moves (weights once, plus every traced op's
output written and read once) and its number of ops (each one a kernel launch or a CPU dispatch). Its latency is
``max(flops / F, bytes / B) + ops * L`` with effective rates F (FLOP/s) and B (bytes/s) and a per-op cost L.
`calibrate` fits (F, B, L) to measured entries of one target; `Roofline.transfer` moves a fit to another target by
the ratio of the targets' peak rates (and takes that target's launch cost); without any fit, a GPU target gets
50% of its peak FLOP/s and 70% of its bandwidth.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch

from latency_tables.blocks import Block
from latency_tables.measure import DTYPES
from latency_tables.targets import Target
from search_spaces import module_flops

__all__ = ["BlockCost", "Roofline", "block_cost", "calibrate", "default_roofline", "EstimationError"]

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


class EstimationError(ValueError):
    """No estimate can be made (e.g. a CPU target without measured entries to calibrate on)."""


@dataclass(frozen=True)
class BlockCost:
    flops: float  # multiply-adds
    bytes: float
    ops: int


@functools.lru_cache(maxsize=65536)
def _block_cost_cached(block: Block, batch: int, dtype: str) -> BlockCost:
    module = block.build().eval()
    example = block.example_input(batch)
    with warnings.catch_warnings():  # tracer warnings about shape-dependent Python branches: expected here
        warnings.simplefilter("ignore")
        flops = module_flops(module, example)
        with torch.no_grad():
            graph = torch.jit.trace(module, example, check_trace=False).inlined_graph
    ops, activation_elements = 0, 0
    for node in graph.nodes():
        if not node.kind().startswith("aten::") or node.kind() in _VIEW_OPS:
            continue
        ops += 1
        for output in node.outputs():
            sizes = output.type().sizes() if isinstance(output.type(), torch._C.TensorType) else None
            if sizes:
                activation_elements += math.prod(sizes)
    param_elements = sum(p.numel() for p in module.parameters())
    element_bytes = DTYPE_BYTES[dtype]
    moved = element_bytes * (param_elements + example.numel() + 2 * activation_elements)
    return BlockCost(float(flops), float(moved), ops)


# ops that only re-describe memory: no kernel, no traffic
_VIEW_OPS = frozenset({"aten::view", "aten::reshape", "aten::permute", "aten::transpose", "aten::unsqueeze",
                       "aten::squeeze", "aten::select", "aten::slice", "aten::size", "aten::Int", "aten::unbind",
                       "aten::split", "aten::split_with_sizes", "aten::expand", "aten::flatten", "aten::t",
                       "aten::detach", "aten::to", "aten::contiguous", "aten::chunk", "aten::ScalarImplicit"})


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
