"""The additivity correction of a latency table: a network measured end to end runs longer than the sum of its
blocks timed alone, by a cost per byte of weights and activations brought back from memory."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from common.dtypes import DTYPE_BYTES
from latency_tables.block_costs import block_costs
from latency_tables.blocks import Block
from latency_tables.estimate import EstimationError

__all__ = ["AdditivityCorrection", "MIN_CORRECTION_NETWORKS", "weights_mb", "activations_mb"]

_log = logging.getLogger(__name__)
MIN_CORRECTION_NETWORKS = 3  # networks measured end to end that the additivity correction's 3 terms need


@dataclass(frozen=True)
class AdditivityCorrection:
    """``network_ms = scale * sum(entries) + ms_per_weight_mb * weights MB + ms_per_activation_mb * activations MB``,
    fitted on networks measured end to end on the table's device. Weights are the network's parameters, activations
    the sum of its blocks' input tensors, both in MB (2**20 bytes) of the table's dtype at its batch.

    Why: a block timed alone finds its weights and its input in the cache (it ran a moment ago); inside a network
    the other blocks' weights and activations evict them, so each block also pays for bringing its bytes back
    from memory (on this CPU networks ran 1.05-1.42x the sum of their blocks, benchmarks/additivity.py). Per
    byte, not per millisecond: a compute-bound block (global attention over 3136 tokens) runs as fast in a
    network as alone, and the earlier ``sum * (scale + c * weights MB)`` predicted such a network 17% over.
    Each block's share is `block_ms`.
    """
    scale: float
    ms_per_weight_mb: float
    ms_per_activation_mb: float
    networks: int
    median_abs_err_before: float
    median_abs_err_after: float

    def block_ms(self, entry_ms: float, weights_mb: float, activations_mb: float) -> float:
        """The latency in a network of a block whose entry is `entry_ms`, with these weights and input (MB)."""
        return self.scale * entry_ms + self.ms_per_weight_mb * weights_mb + self.ms_per_activation_mb * activations_mb

    @staticmethod
    def fit(samples: list[tuple[float, float, float, float]]) -> AdditivityCorrection:
        """From ``(sum of entries ms, weights MB, activations MB, measured ms)`` per network: least squares on the
        relative error, with the per-MB costs kept >= 0 (a term that fits negative is dropped and the rest refit)."""
        if len(samples) < MIN_CORRECTION_NETWORKS:
            raise EstimationError(f"need at least {MIN_CORRECTION_NETWORKS} networks measured end to end to fit a "
                                  f"correction, got {len(samples)}")
        sums, weights, activations, measured = (np.array(column, dtype=float) for column in zip(*samples))
        columns = {"scale": sums, "weights": weights, "activations": activations}
        kept = list(columns)
        while True:
            design = np.stack([columns[name] / measured for name in kept], axis=1)
            solution, *_ = np.linalg.lstsq(design, np.ones_like(measured), rcond=None)
            coefficients = dict(zip(kept, solution))
            negative = [name for name in kept[1:] if coefficients[name] < 0]
            if not negative:
                break
            kept.remove(min(negative, key=coefficients.get))
        scale, per_weight, per_activation = (float(coefficients.get(name, 0.0)) for name in columns)
        predicted = scale * sums + per_weight * weights + per_activation * activations
        before = float(np.median(np.abs(sums - measured) / measured))
        after = float(np.median(np.abs(predicted - measured) / measured))
        return AdditivityCorrection(scale, per_weight, per_activation, len(samples), before, after)

    @staticmethod
    def from_record(fit: dict) -> AdditivityCorrection | None:
        """The stored fit, or None for one of an older form (refit it: `launch.py measure --refit`)."""
        try:
            return AdditivityCorrection(**fit)
        except TypeError:
            _log.warning("the stored additivity correction has an older form and is ignored; refit it with "
                         "`launch.py measure --refit` (or `--archs 50 --networks 40` where it stored no networks)")
            return None



def weights_mb(blocks: list[Block], dtype: str) -> float:
    """Parameter footprint of a network's blocks in MB (2**20 bytes) of `dtype`."""
    return sum(block_costs(b, "torch-eager-fp32")[1] for b in blocks) * DTYPE_BYTES[dtype] / 2**20


def activations_mb(blocks: list[Block], batch: int, dtype: str) -> float:
    """Sum of the blocks' input tensors ``[batch, C, H, W]`` in MB (2**20 bytes) of `dtype`."""
    return sum(batch * math.prod(b.in_shape) for b in blocks) * DTYPE_BYTES[dtype] / 2**20
