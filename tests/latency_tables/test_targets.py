"""Targets: sane public facts, device-name matching, typed errors for unknown and unavailable targets."""
from __future__ import annotations

import re

import pytest
import torch

from latency_tables.targets import (
    PEAK_FLOPS_DTYPES, TARGETS, Target, TargetUnavailableError, UnknownTargetError, current_device_string, get_target,
    software_versions, target_for_device_name,
)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_facts_are_sane(name: str) -> None:
    target = TARGETS[name]
    assert target.name == name
    assert set(target.peak_flops) == set(PEAK_FLOPS_DTYPES)
    assert target.default_batch == 1 and target.default_resolution == 224
    assert all(pattern == pattern.lower() for pattern in target.device_patterns)
    if target.kind == "cpu":
        assert target.default_dtype == "fp32"
        assert target.device_patterns == ()
        return
    assert target.kind == "gpu"
    assert target.memory_bandwidth_bytes_per_s is not None and target.memory_bandwidth_bytes_per_s > 100e9
    assert target.sm_count is not None and 20 <= target.sm_count <= 200
    assert target.memory_gib is not None and target.memory_gib >= 16
    assert target.device_patterns
    assert 1.0 <= target.dispatch_us["compiled"] <= target.dispatch_us["eager"] <= 20.0
    assert target.default_dtype in ("bf16", "fp16")
    assert target.peak_flops[target.default_dtype] is not None
    fp32 = target.peak_flops["fp32"]
    assert fp32 is not None and 1e12 < fp32 < 200e12
    for dtype in ("tf32", "fp16", "bf16"):
        value = target.peak_flops[dtype]
        if value is not None:
            assert value >= fp32, f"{name}: {dtype} peak below fp32 peak"
            assert value < 2e15, f"{name}: {dtype} peak looks like a sparse or fp8 number"
    # Machine balance (FLOP per byte at the ridge point) is in the range of real GPUs.
    assert 10 < target.peak_flops[target.default_dtype] / target.memory_bandwidth_bytes_per_s < 1000


def test_t4_has_no_bf16_and_defaults_to_fp16() -> None:
    t4 = get_target("t4")
    assert t4.peak_flops["bf16"] is None and t4.peak_flops["tf32"] is None
    assert t4.default_dtype == "fp16"


def test_peak_flops_is_read_only() -> None:
    with pytest.raises(TypeError):
        TARGETS["h100"].peak_flops["bf16"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize("device_name, expected", [
    ("NVIDIA H100 80GB HBM3", "h100"),
    ("NVIDIA H100", "h100"),
    ("NVIDIA A100-SXM4-80GB", "a100"),
    ("NVIDIA A100-SXM4-40GB", "a100"),
    ("NVIDIA A100 80GB PCIe", "a100"),
    ("NVIDIA GeForce RTX 4090", "rtx4090"),
    ("NVIDIA GeForce RTX 3090", "rtx3090"),
    ("NVIDIA GeForce RTX 5090", "rtx5090"),
    ("Tesla T4", "t4"),
    ("NVIDIA A10G", "a10g"),
    ("NVIDIA L4", "l4"),
    ("NVIDIA H200", "h200"),
    # Different chips or configurations: no target rather than wrong facts.
    ("NVIDIA H100 PCIe", None),
    ("NVIDIA H100 NVL", None),
    ("NVIDIA H200 NVL", None),
    ("NVIDIA A10", None),
    ("NVIDIA L40S", None),
    ("NVIDIA GeForce RTX 4090 D", None),
    ("NVIDIA GeForce RTX 4090 Laptop GPU", None),
    ("NVIDIA GeForce RTX 3090 Ti", None),
    ("NVIDIA GeForce RTX 4080", None),
])
def test_target_for_device_name(device_name: str, expected: str | None) -> None:
    found = target_for_device_name(device_name)
    assert (found.name if found else None) == expected
    matching = [t.name for t in TARGETS.values() if t.matches_device_name(device_name)]
    assert len(matching) <= 1, f"{device_name!r} matches several targets: {matching}"


def test_unknown_target_lists_known_names() -> None:
    with pytest.raises(UnknownTargetError) as info:
        get_target("h1000")
    message = str(info.value)
    assert "'h1000'" in message
    for name in TARGETS:
        assert name in message
    assert isinstance(info.value, ValueError)


def test_get_target_returns_registered_target() -> None:
    assert get_target("a100") is TARGETS["a100"]
    assert isinstance(get_target("cpu"), Target)


def test_device_type_is_cuda_for_gpus_and_cpu_for_the_cpu() -> None:
    assert [get_target(name).device_type for name in ("h100", "t4", "cpu")] == ["cuda", "cuda", "cpu"]


def test_gpu_target_without_gpu_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TargetUnavailableError) as info:
        current_device_string(get_target("h100"))
    message = str(info.value)
    assert "target 'h100' needs an NVIDIA H100" in message
    assert "torch.cuda.is_available() is False" in message


def test_gpu_target_with_other_gpu_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 4090")
    with pytest.raises(TargetUnavailableError) as info:
        current_device_string(get_target("h100"))
    assert "'NVIDIA GeForce RTX 4090'" in str(info.value) and "'rtx4090'" in str(info.value)
    assert current_device_string(get_target("rtx4090")) == "NVIDIA GeForce RTX 4090"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour of a machine without a GPU")
def test_gpu_target_on_this_cpu_machine_raises() -> None:
    with pytest.raises(TargetUnavailableError, match=r"this machine has none"):
        current_device_string(get_target("a100"))


def test_cpu_device_string() -> None:
    device = current_device_string(get_target("cpu"))
    assert device.startswith("cpu:")
    assert re.search(r":\d+ cores$", device)
    assert device == current_device_string(get_target("cpu"))  # stable: it is part of every key


def test_software_versions() -> None:
    versions = software_versions()
    assert set(versions) == {"torch", "triton", "cuda"}
    assert versions["torch"] == torch.__version__
    assert versions["cuda"] == (torch.version.cuda or "none")
    assert all(isinstance(value, str) and value for value in versions.values())
