"""`CostProfile`: the kernels of one forward as exact affine functions of the batch size.

Every FLOP and byte of a forward is ``at_base + per_image * (batch - base)``: activations and the work on them
grow with the batch, weights and per-forward constants (a window mask, a position-bias table) do not. Counting a
module at batches ``base`` and ``base + 1`` (`profile_module`) gives both terms, so the cost at any batch from
``base`` up is a lookup, and a test holds it equal to a count made at that batch. Batch 1 is special: a tensor with
a batch dimension of 1 is contiguous in more layouts, so some copies (``clone`` after a permute) do not run at
batch 1 and do from batch 2 on; such a forward needs a profile counted at batch 1 and one from batch 2
(`ProfileError` says so when the two counts disagree). Compute kernels (GEMM, convolution, attention) are kept
one by one: their time is ``max(compute, memory)`` each. Memory-only kernels (FLOPs 0) are kept as a count and a
byte total per class: their time is bytes over bandwidth whichever kernel moves them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from latency_tables.counting import COMPUTE_CLASSES, OP_CLASSES, RUNTIMES, Kernel, count_kernels

__all__ = ["CostProfile", "ProfileError", "profile_module", "profile_from_kernels"]


class ProfileError(ValueError):
    """A forward does not run the same kernels at batch 1 and 2, so its cost cannot be extended to other batches."""


@dataclass(frozen=True)
class CostProfile:
    """The kernels of one forward, affine in the batch B from `base` up.

    ``compute``: one row per compute kernel, ``(class, flops at B=base, flops per extra image, bytes at B=base,
    bytes per extra image)``; ``memory``: one row per memory-only class, ``(class, kernels, bytes at B=base, bytes
    per extra image)``. FLOPs count 2 per multiply-add.
    """
    compute: tuple[tuple[str, float, float, float, float], ...]
    memory: tuple[tuple[str, int, float, float], ...]
    base: int = 1

    def _extra(self, batch: int) -> int:
        if batch < self.base:
            raise ValueError(f"this profile holds from batch {self.base} up, not for batch {batch}")
        return batch - self.base

    @property
    def kernels(self) -> int:
        return len(self.compute) + sum(row[1] for row in self.memory)

    def arrays(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(class index [K], flops [K], bytes [K])`` of the compute kernels at `batch` (index into `OP_CLASSES`)."""
        extra = self._extra(batch)
        classes = np.array([OP_CLASSES.index(row[0]) for row in self.compute], dtype=np.int64)
        flops = np.array([row[1] + row[2] * extra for row in self.compute], dtype=float)
        moved = np.array([row[3] + row[4] * extra for row in self.compute], dtype=float)
        return classes, flops, moved

    def memory_bytes(self, batch: int) -> dict[str, float]:
        """Bytes moved by the memory-only kernels of each class at `batch`."""
        extra = self._extra(batch)
        return {row[0]: row[2] + row[3] * extra for row in self.memory}

    def flops(self, batch: int) -> float:
        """All FLOPs of the forward at `batch` (2 per multiply-add)."""
        extra = self._extra(batch)
        return float(sum(row[1] + row[2] * extra for row in self.compute))

    def bytes(self, batch: int) -> float:
        """All bytes moved at `batch`."""
        extra = self._extra(batch)
        return float(sum(row[3] + row[4] * extra for row in self.compute) + sum(self.memory_bytes(batch).values()))

    def to_json(self) -> list:
        return [self.base, [list(row) for row in self.compute], [list(row) for row in self.memory]]

    @staticmethod
    def from_json(data: list) -> CostProfile:
        base, compute, memory = data
        return CostProfile(tuple((str(c), float(a), float(b), float(d), float(e)) for c, a, b, d, e in compute),
                           tuple((str(c), int(n), float(a), float(b)) for c, n, a, b in memory), int(base))


def _memory_totals(kernels: list[Kernel]) -> dict[str, tuple[int, float]]:
    totals: dict[str, tuple[int, float]] = {}
    for kernel in kernels:
        if kernel.op_class not in COMPUTE_CLASSES:
            count, moved = totals.get(kernel.op_class, (0, 0.0))
            totals[kernel.op_class] = (count + 1, moved + kernel.bytes)
    return totals


def profile_from_kernels(at_one: list[Kernel], at_two: list[Kernel], base: int = 1) -> CostProfile:
    """The affine profile through the kernels of one forward at batch `base` (`at_one`) and at ``base + 1``
    (`at_two`); `ProfileError` if the two forwards ran different kernels."""
    compute_one = [k for k in at_one if k.op_class in COMPUTE_CLASSES]
    compute_two = [k for k in at_two if k.op_class in COMPUTE_CLASSES]
    if [k.op_class for k in compute_one] != [k.op_class for k in compute_two]:
        raise ProfileError(f"the compute kernels differ between batch {base} and batch {base + 1}")
    memory_one, memory_two = _memory_totals(at_one), _memory_totals(at_two)
    if {c: n for c, (n, _) in memory_one.items()} != {c: n for c, (n, _) in memory_two.items()}:
        raise ProfileError(f"the memory kernels differ between batch {base} and batch {base + 1}")
    compute = tuple((a.op_class, a.flops, b.flops - a.flops, a.bytes, b.bytes - a.bytes)
                    for a, b in zip(compute_one, compute_two))
    memory = tuple((c, n, moved, memory_two[c][1] - moved) for c, (n, moved) in sorted(memory_one.items()))
    return CostProfile(compute, memory, base)


def profile_module(build: Callable[[], nn.Module], input_shape: tuple[int, ...], dtype: torch.dtype,
                   fuse_project_kernels: bool, runtimes: tuple[str, ...] = RUNTIMES, base: int = 1,
                   autocast: torch.dtype | None = None, exact_only: bool = False) -> dict[str, CostProfile]:
    """`CostProfile` per runtime of the module `build()` makes, for inputs ``[B, *input_shape]`` in `dtype`
    (counted at B = `base` and B = ``base + 1`` on the meta device; `autocast` as `counting.trace`). With
    `exact_only`, counted at `base` alone: a profile that is right at that batch (its per-image terms are 0)."""
    one = count_kernels(build, (base, *input_shape), dtype, fuse_project_kernels, runtimes, autocast)
    if exact_only:
        return {runtime: profile_from_kernels(one[runtime], one[runtime], base) for runtime in runtimes}
    two = count_kernels(build, (base + 1, *input_shape), dtype, fuse_project_kernels, runtimes, autocast)
    return {runtime: profile_from_kernels(one[runtime], two[runtime], base) for runtime in runtimes}
