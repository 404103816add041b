"""GPU time of a `CostProfile` from the GPU's public specs and a calibration fitted on public measurements.

Each compute kernel (GEMM, convolution, depthwise convolution, attention) takes ``max(FLOPs / (e_c x peak_c),
bytes / (b_c x bandwidth))``: the slower of its compute at a fraction ``e_c`` of the GPU's peak rate for its class
(tensor-core fp16/bf16 for GEMM, convolution and attention; the fp32 rate of the CUDA cores for depthwise
convolution) and its traffic at a fraction ``b_c`` of the DRAM bandwidth. Memory-only kernels (norms, element-wise)
take their bytes at their class's fraction of the bandwidth. Every kernel adds a fixed GPU-side cost (launch,
ramp-up and its last partial wave), expressed as an amount of CUDA-core work (``kernel_flops``), so it shrinks
with the GPU's SM count x clock: fitted on the RTX 3090 and moved to the RTX 4090 that way, it predicted the 4090
better than a cost fixed in microseconds (benchmarks/gpu_estimate.py). On top, a batch-1 forward cannot run
faster than the CPU issues its kernels: ``max(GPU time, kernels x dispatch)``, with the per-kernel dispatch cost a
named fact of the target (`latency_tables.targets.Target.dispatch_us`) until a GPU measures it. The efficiencies
are properties of a runtime and of kernels, not of one GPU, so a calibration fitted on some GPUs moves to another
by its specs alone; `latency_tables.calibration` fits them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

from latency_tables.counting import COMPUTE_CLASSES, OP_CLASSES, RUNTIMES
from latency_tables.profile import CostProfile
from latency_tables.targets import Target

__all__ = ["Calibration", "GpuRates", "gpu_rates", "profile_seconds"]


@dataclass(frozen=True)
class Calibration:
    """Efficiencies of one runtime: ``compute[c]`` of the peak FLOP/s of class c, ``bandwidth[c]`` of the DRAM
    bandwidth, and ``kernel_flops``, each kernel's fixed cost as FP32 CUDA-core work (``kernel_flops / fp32 peak``
    seconds); ``fitted_on`` says what they stand on, ``fit`` holds the fit's errors and provenance."""
    runtime: str
    compute: Mapping[str, float]
    bandwidth: Mapping[str, float]
    kernel_flops: float
    fitted_on: str
    fit: Mapping = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"calibration runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if set(self.compute) != set(COMPUTE_CLASSES) or set(self.bandwidth) != set(OP_CLASSES):
            raise ValueError(f"a calibration needs compute efficiencies of {COMPUTE_CLASSES} and bandwidth "
                             f"efficiencies of {OP_CLASSES}")
        values = [*self.compute.values(), *self.bandwidth.values(), self.kernel_flops]
        if not all(isinstance(v, (int, float)) and np.isfinite(v) and v > 0 for v in values):
            raise ValueError("calibration efficiencies and kernel cost must be positive numbers")
        object.__setattr__(self, "compute", MappingProxyType(dict(self.compute)))
        object.__setattr__(self, "bandwidth", MappingProxyType(dict(self.bandwidth)))

    def to_dict(self) -> dict:
        return {"runtime": self.runtime, "compute": dict(self.compute), "bandwidth": dict(self.bandwidth),
                "kernel_flops": self.kernel_flops, "fitted_on": self.fitted_on, "fit": dict(self.fit)}

    @staticmethod
    def from_dict(data: dict) -> Calibration:
        return Calibration(runtime=data["runtime"], compute=data["compute"], bandwidth=data["bandwidth"],
                           kernel_flops=float(data["kernel_flops"]), fitted_on=data["fitted_on"],
                           fit=data.get("fit", {}))


@dataclass(frozen=True)
class GpuRates:
    """Peak FLOP/s per op class (`OP_CLASSES` order), DRAM bandwidth and FP32 CUDA-core peak of a GPU at one
    dtype."""
    peak_flops: np.ndarray
    bandwidth_bytes_per_s: float
    fp32_flops: float


def gpu_rates(target: Target, dtype: str) -> GpuRates:
    """`target`'s public peak rates for `dtype`: tensor-core rates for GEMM, convolution and attention, the fp32
    CUDA-core rate for depthwise convolution. ValueError where a spec is not public."""
    tensor, cuda_cores = target.peak_flops.get(dtype), target.peak_flops.get("fp32")
    if not (target.is_gpu and tensor and cuda_cores and target.memory_bandwidth_bytes_per_s):
        raise ValueError(f"target {target.name!r} has no public peak FLOP/s or bandwidth for {dtype}")
    peaks = np.array([cuda_cores if c == "dwconv" else tensor for c in OP_CLASSES], dtype=float)
    return GpuRates(peaks, float(target.memory_bandwidth_bytes_per_s), float(cuda_cores))


def profile_seconds(profile: CostProfile, batch: int, rates: GpuRates, calibration: Calibration,
                    dispatch_us: float = 0.0) -> float:
    """Seconds one forward of `profile` at `batch` takes on a GPU of `rates` under `calibration`, never less than
    its kernels times `dispatch_us`."""
    classes, flops, moved = profile.arrays(batch)
    compute_eff = np.array([calibration.compute.get(c, 1.0) for c in OP_CLASSES])
    bandwidth_eff = np.array([calibration.bandwidth[c] for c in OP_CLASSES])
    seconds = float(np.maximum(flops / (compute_eff[classes] * rates.peak_flops[classes]),
                               moved / (bandwidth_eff[classes] * rates.bandwidth_bytes_per_s)).sum())
    for op_class, moved_bytes in profile.memory_bytes(batch).items():
        seconds += moved_bytes / (calibration.bandwidth[op_class] * rates.bandwidth_bytes_per_s)
    seconds += profile.kernels * calibration.kernel_flops / rates.fp32_flops
    return max(seconds, profile.kernels * dispatch_us * 1e-6)
