"""Latency targets: the hardware a latency table is for, with the public facts the roofline estimate needs.

A `Target` names a kind of device (``h100``, ``rtx4090``, ``cpu``) and carries its peak dense FLOP/s per dtype,
its memory bandwidth and a per-kernel launch cost. Measured entries are keyed by the *device string* of the
machine that measured them (`current_device_string`), so two GPUs of one target (an A100 40GB and an 80GB) never
share entries by accident; the target's facts are only used to *estimate* entries that were not measured.

Numbers are dense (no 2:4 sparsity) peak rates from NVIDIA's datasheets and architecture whitepapers. Tensor-core
rates for fp16/bf16 are with FP32 accumulation (what PyTorch and Triton matmuls use); on GeForce cards that is half
the marketed fp16-accumulate rate. ``fp32`` is the non-tensor-core FP32 rate; ``tf32`` the dense tensor-core TF32
rate. ``None`` means "not supported" (T4 has no bf16) or "not public" (the CPU target is whatever machine runs the
measurement): estimation for such entries relies on calibration from measured entries, not on these facts.
"""
from __future__ import annotations

import logging
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from common.dtypes import DTYPES, PEAK_FLOPS_DTYPES
from common.errors import UserFacingError

__all__ = [
    "Target", "TARGETS", "UnknownTargetError", "TargetUnavailableError", "get_target",
    "target_for_device_name", "current_device_string", "local_cores", "software_versions",
]

logger = logging.getLogger(__name__)

KINDS = ("gpu", "cpu")


class UnknownTargetError(UserFacingError, ValueError):
    """A target name is not in `TARGETS`; the message lists the known names."""


class TargetUnavailableError(UserFacingError, RuntimeError):
    """The target's device is not present on this machine, so nothing can be measured for it here."""


@dataclass(frozen=True)
class Target:
    """One kind of device latency tables are built for, with the public facts the roofline estimate uses.

    ``peak_flops`` maps each of `PEAK_FLOPS_DTYPES` to dense peak FLOP/s (``None``: unsupported or unknown).
    ``memory_gib`` is the vendor's marketed capacity (NVIDIA's "80GB" HBM is 80 GiB). ``device_patterns`` are
    lower-case regular expressions searched in ``torch.cuda.get_device_name().lower()``.
    """

    name: str
    kind: str  # "gpu" | "cpu"
    description: str
    peak_flops: Mapping[str, float | None] = field(hash=False)
    memory_bandwidth_bytes_per_s: float | None
    sm_count: int | None
    memory_gib: float | None
    device_patterns: tuple[str, ...]
    default_dtype: str
    default_batch: int = 1
    default_resolution: int = 224
    # CPU cost of issuing one kernel per runtime (us), the floor of a batch-1 forward: ASSUMED, not measured here
    # (no GPU has been lent to this project). PyTorch eager's dispatcher and cudaLaunchKernel cost about 5-10 us an
    # op on a fast host core, a compiled graph's generated launcher about 3-5 us a kernel (PyTorch's CUDA graphs
    # and torch.compile documentation give these orders of magnitude). Measuring a table on the GPU replaces it.
    dispatch_us: Mapping[str, float] = field(default_factory=lambda: {"eager": 8.0, "compiled": 4.0}, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"target {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        unknown = set(self.peak_flops) - set(PEAK_FLOPS_DTYPES)
        missing = set(PEAK_FLOPS_DTYPES) - set(self.peak_flops)
        if unknown or missing:
            raise ValueError(f"target {self.name!r}: peak_flops needs exactly the keys {PEAK_FLOPS_DTYPES}; "
                             f"unknown {sorted(unknown)}, missing {sorted(missing)}")
        if self.default_dtype not in DTYPES:
            raise ValueError(f"target {self.name!r}: default_dtype must be one of {DTYPES}, got {self.default_dtype!r}")
        if self.kind == "gpu" and self.peak_flops[self.default_dtype] is None:
            raise ValueError(f"target {self.name!r}: default dtype {self.default_dtype!r} is not supported by it")
        for pattern in self.device_patterns:
            re.compile(pattern)
        if set(self.dispatch_us) != {"eager", "compiled"} or not all(v > 0 for v in self.dispatch_us.values()):
            raise ValueError(f"target {self.name!r}: dispatch_us needs positive 'eager' and 'compiled' costs")
        # Read-only views, so a shared `TARGETS` entry cannot be changed by one caller for all others.
        object.__setattr__(self, "peak_flops", MappingProxyType(dict(self.peak_flops)))
        object.__setattr__(self, "dispatch_us", MappingProxyType(dict(self.dispatch_us)))

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    @property
    def device_type(self) -> str:
        """The torch device type this target runs on: ``cuda`` for a GPU, else ``cpu``."""
        return "cuda" if self.is_gpu else "cpu"

    def matches_device_name(self, device_name: str) -> bool:
        """Whether ``device_name`` (as ``torch.cuda.get_device_name()`` reports it) is this target's device."""
        lowered = device_name.lower()
        return any(re.search(pattern, lowered) for pattern in self.device_patterns)


def _flops(fp32: float | None, tf32: float | None, fp16: float | None, bf16: float | None) -> dict[str, float | None]:
    return {"fp32": fp32, "tf32": tf32, "fp16": fp16, "bf16": bf16}


_TARGET_LIST = (
    # This machine's CPU. Its peak FLOP/s and bandwidth are not public facts of a target name; estimates for the
    # cpu target are fitted on its measured entries only (their per-kernel cost includes PyTorch's dispatch).
    Target(
        name="cpu", kind="cpu", description="the CPU of the machine that measures (keyed by its device string)",
        peak_flops=_flops(None, None, None, None), memory_bandwidth_bytes_per_s=None, sm_count=None,
        memory_gib=None, device_patterns=(), default_dtype="fp32",
    ),
    # NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB column): FP32 19.5 TF, TF32 156 TF, BF16/FP16 312 TF dense,
    # 2,039 GB/s; 108 SMs per the NVIDIA A100 (Ampere GA100) architecture whitepaper. Matches every A100: the 40GB
    # and PCIe models have the same SMs and peak compute but less bandwidth (1,555 / 1,935 GB/s).
    Target(
        name="a100", kind="gpu", description="NVIDIA A100 SXM4 80GB",
        peak_flops=_flops(19.5e12, 156e12, 312e12, 312e12), memory_bandwidth_bytes_per_s=2.039e12, sm_count=108,
        memory_gib=80, device_patterns=(r"\ba100\b",), default_dtype="bf16",
    ),
    # NVIDIA H100 Tensor Core GPU datasheet / Hopper (GH100) whitepaper, SXM5 column: FP32 66.9 TF, TF32 494.7 TF,
    # BF16/FP16 989.4 TF dense, 3.35 TB/s, 132 SMs. The PCIe (114 SMs, 2.0 TB/s) and NVL models differ enough that
    # they are not matched; add targets for them rather than reusing these facts.
    Target(
        name="h100", kind="gpu", description="NVIDIA H100 SXM5 80GB",
        peak_flops=_flops(66.9e12, 494.7e12, 989.4e12, 989.4e12), memory_bandwidth_bytes_per_s=3.35e12,
        sm_count=132, memory_gib=80, device_patterns=(r"\bh100\b(?!.*\b(pcie|nvl)\b)",), default_dtype="bf16",
    ),
    # NVIDIA H200 Tensor Core GPU datasheet, SXM column: same GH100 compute as H100 SXM5 (FP32 67 TF, TF32 494.7 TF
    # and BF16/FP16 989.4 TF dense), 4.8 TB/s HBM3e, 141 GB. The H200 NVL (lower power limit) is not matched.
    Target(
        name="h200", kind="gpu", description="NVIDIA H200 SXM 141GB",
        peak_flops=_flops(66.9e12, 494.7e12, 989.4e12, 989.4e12), memory_bandwidth_bytes_per_s=4.8e12,
        sm_count=132, memory_gib=141, device_patterns=(r"\bh200\b(?!.*\bnvl\b)",), default_dtype="bf16",
    ),
    # NVIDIA L4 Tensor Core GPU datasheet: FP32 30.3 TF; TF32 120 TF and BF16/FP16 242 TF are *with sparsity*, so
    # dense is 60 / 121 TF; 300 GB/s; 24 GB; 58 SMs (AD104, Ada Lovelace whitepaper).
    Target(
        name="l4", kind="gpu", description="NVIDIA L4 24GB",
        peak_flops=_flops(30.3e12, 60e12, 121e12, 121e12), memory_bandwidth_bytes_per_s=300e9, sm_count=58,
        memory_gib=24, device_patterns=(r"\bl4\b",), default_dtype="bf16",
    ),
    # AWS's A10G (GA102, 80 SMs, 24 GB GDDR6, 600 GB/s). NVIDIA publishes no datasheet for it; the A10 datasheet
    # (72 SMs, 125 TF dense BF16) does NOT apply. Third-party figures put A10G tensor throughput at about 70 TF
    # dense fp16/bf16 with FP32 accumulation (GeForce-like half rate) and FP32 at about 31-35 TF (80 SMs x 128 FP32
    # lanes x 2 x ~1.7 GHz = 35 TF). UNCERTAIN to roughly +-10%: rely on calibration from measured entries.
    Target(
        name="a10g", kind="gpu", description="NVIDIA A10G 24GB (AWS G5)",
        peak_flops=_flops(35e12, 35e12, 70e12, 70e12), memory_bandwidth_bytes_per_s=600e9, sm_count=80,
        memory_gib=24, device_patterns=(r"\ba10g\b",), default_dtype="bf16",
    ),
    # NVIDIA T4 Tensor Core GPU datasheet: FP32 8.1 TF, mixed-precision FP16/FP32 65 TF, 320 GB/s, 16 GB; 40 SMs
    # (TU104, Turing whitepaper). Turing has neither bf16 nor tf32, so the default dtype is fp16. "T4G" (AWS G5g)
    # is the same chip.
    Target(
        name="t4", kind="gpu", description="NVIDIA T4 16GB",
        peak_flops=_flops(8.1e12, None, 65e12, None), memory_bandwidth_bytes_per_s=320e9, sm_count=40,
        memory_gib=16, device_patterns=(r"\bt4g?\b",), default_dtype="fp16",
    ),
    # NVIDIA Ampere GA102 GPU architecture whitepaper, GeForce RTX 3090 column: FP32 35.6 TF; dense FP16/BF16 tensor
    # with FP32 accumulate 71 TF (142 TF with FP16 accumulate); TF32 35.6 TF; 936 GB/s; 82 SMs; 24 GB. The 3090 Ti
    # (84 SMs, higher clocks) is not matched.
    Target(
        name="rtx3090", kind="gpu", description="NVIDIA GeForce RTX 3090 24GB",
        peak_flops=_flops(35.6e12, 35.6e12, 71e12, 71e12), memory_bandwidth_bytes_per_s=936e9, sm_count=82,
        memory_gib=24, device_patterns=(r"rtx 3090(?! ti)",), default_dtype="bf16",
    ),
    # NVIDIA Ada GPU architecture whitepaper, GeForce RTX 4090 column: FP32 82.6 TF; dense FP16/BF16 tensor with
    # FP32 accumulate 165.2 TF (330.3 TF with FP16 accumulate); TF32 82.6 TF; 1,008 GB/s; 128 SMs; 24 GB.
    # The 4090 D (114 SMs) and the laptop part (a different chip) are not matched.
    Target(
        name="rtx4090", kind="gpu", description="NVIDIA GeForce RTX 4090 24GB",
        peak_flops=_flops(82.6e12, 82.6e12, 165.2e12, 165.2e12), memory_bandwidth_bytes_per_s=1008e9,
        sm_count=128, memory_gib=24, device_patterns=(r"rtx 4090(?! d\b)(?!.*laptop)",), default_dtype="bf16",
    ),
    # NVIDIA RTX Blackwell GPU architecture whitepaper, GeForce RTX 5090 column: FP32 104.8 TF; dense FP16/BF16
    # tensor with FP32 accumulate 209.5 TF (419 TF with FP16 accumulate); TF32 104.8 TF dense; 1,792 GB/s; 170 SMs;
    # 32 GB. The FP32-accumulate and TF32 rates follow GeForce's usual half rate and are less certain than the
    # FP32 and bandwidth figures. The 5090 D and laptop parts are not matched.
    Target(
        name="rtx5090", kind="gpu", description="NVIDIA GeForce RTX 5090 32GB",
        peak_flops=_flops(104.8e12, 104.8e12, 209.5e12, 209.5e12), memory_bandwidth_bytes_per_s=1792e9,
        sm_count=170, memory_gib=32, device_patterns=(r"rtx 5090(?! d\b)(?!.*laptop)",), default_dtype="bf16",
    ),
)

TARGETS: dict[str, Target] = {target.name: target for target in _TARGET_LIST}


def get_target(name: str) -> Target:
    """The target called ``name``; `UnknownTargetError` (listing the known names) otherwise."""
    try:
        return TARGETS[name]
    except (KeyError, TypeError):
        raise UnknownTargetError(
            f"unknown latency target {name!r}; known targets: {', '.join(sorted(TARGETS))}") from None


def target_for_device_name(device_name: str) -> Target | None:
    """The GPU target whose patterns match ``device_name`` (e.g. ``"NVIDIA H100 80GB HBM3"``), or None."""
    matches = [target for target in TARGETS.values() if target.matches_device_name(device_name)]
    if len(matches) > 1:  # the patterns are meant to be disjoint; say so loudly rather than pick one silently
        logger.warning("device %r matches several targets (%s); using %s", device_name,
                       ", ".join(t.name for t in matches), matches[0].name)
    return matches[0] if matches else None


def _cpu_model_name() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return None


def local_cores() -> int:
    """The cores this process may run on (its CPU affinity; the machine's count where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def current_device_string(target: Target) -> str:
    """The string that identifies this machine's device for ``target``; it is part of every entry's key.

    CPU: ``cpu:<arch>:<model name>:<n> cores`` (``n`` is the number of cores this process may run on). GPU:
    ``torch.cuda.get_device_name()`` of the current device, which must match the target's patterns; otherwise
    `TargetUnavailableError`.
    """
    if target.kind == "cpu":
        arch = platform.machine() or platform.processor() or "unknown"
        model = _cpu_model_name() or platform.processor() or "unknown model"
        return f"cpu:{arch}:{model}:{local_cores()} cores"

    import torch

    if not torch.cuda.is_available():
        raise TargetUnavailableError(
            f"target {target.name!r} needs an {target.description} GPU; this machine has none "
            f"(torch.cuda.is_available() is False). Measure on a machine with that GPU, or estimate without "
            f"measuring.")
    device_name = torch.cuda.get_device_name()
    if not target.matches_device_name(device_name):
        found = target_for_device_name(device_name)
        hint = f" (that is target {found.name!r})" if found else " (no known target matches it)"
        raise TargetUnavailableError(
            f"target {target.name!r} needs an {target.description} GPU; this machine's current GPU is "
            f"{device_name!r}{hint}. Pick the matching --target or select another GPU with CUDA_VISIBLE_DEVICES.")
    return device_name


def software_versions() -> dict[str, str]:
    """Versions that are part of an entry's key: ``torch``, ``triton`` ("none" if absent) and ``cuda``."""
    import torch

    try:
        import triton
        triton_version = str(triton.__version__)
    except ImportError:
        triton_version = "none"
    return {"torch": str(torch.__version__), "triton": triton_version, "cuda": torch.version.cuda or "none"}
