"""benchmarks/kernels.py: the --smoke run end to end (CPU, Triton interpreter), the no-GPU exit, the result checks."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "kernels.py"
# Under the interpreter (conftest sets it on machines without a GPU, before triton's import) main runs in-process;
# elsewhere triton may already be imported for the GPU, so --smoke runs in a fresh process.
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


def _load() -> ModuleType:
    name = "benchmarks_kernels_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


bench = _load()


def _run_smoke(argv: list[str]) -> int:
    if INTERPRETING:
        return bench.main(argv)
    done = subprocess.run([sys.executable, str(SCRIPT), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TRITON_INTERPRET": "1"})
    return done.returncode


def test_smoke_window_rows(tmp_path: Path) -> None:
    out = tmp_path / "kernels-smoke.json"
    assert _run_smoke(["--smoke", "--ops", "window_attention", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["complete"] and result["ok"] and result["failures"] == []
    assert result["dtype"] == "fp32" and result["settings"]["smoke"] and not result["settings"]["compile"]["enabled"]
    window_cases = [c for c in bench.smoke_cases() if c.op_name == "window_attention"]
    assert [(r["shape_id"], r["batch"]) for r in result["rows"]] == [(c.shape_id, b) for c in window_cases
                                                                     for b in (1, 2)]
    for row in result["rows"]:
        assert row["op"] == "window_attention" and row["ok"]
        assert set(row["impls"]) == {"triton", "eager", "sdpa", "sdpa_core"}  # no torch.compile in --smoke
        for name, entry in row["impls"].items():
            assert "error" not in entry, (name, entry)
            assert 0 < entry["p20_ms"] <= entry["median_ms"] <= entry["p80_ms"]
        for name in ("triton", "eager", "sdpa"):  # sdpa_core runs the same SDPA calls as sdpa
            assert row["impls"][name]["ok"] and row["impls"][name]["max_abs_err"] < 1e-4
        assert row["max_abs_err"] == row["impls"]["triton"]["max_abs_err"]
        assert row["speedup_vs_eager"] == pytest.approx(
            row["impls"]["eager"]["median_ms"] / row["impls"]["triton"]["median_ms"])
        assert row["speedup_vs_compile"] is None and row["pct_peak_bw"] is None  # no peaks on CPU
        assert row["bytes_moved"] > 0 and row["flops"] > 0


def test_without_gpu_exits_2_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "never.json"
    assert bench.main(["--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == bench.NO_GPU_MESSAGE and captured.out == ""
    assert not out.exists()


@dataclasses.dataclass(frozen=True)
class _WrongTritonCase:
    """A case whose "triton" output is off by 5%, to check that the run fails loudly."""
    op_name = "window_attention"
    shape_id = "wrong-triton"
    size: int = 8

    def build(self, batch, device, dtype, gen):
        x = torch.randn(batch, self.size, generator=gen).to(device=device, dtype=dtype)

        def op(t: torch.Tensor, backend: str) -> torch.Tensor:
            return t * 1.05 if backend == "triton" else t.clone()

        return bench.Workload(op=op, args=(x,), sdpa=None, sdpa_core=None, bytes_moved=1, flops=1)


@pytest.mark.skipif(not INTERPRETING, reason="in-process --smoke needs TRITON_INTERPRET=1 from the start")
def test_wrong_output_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bench, "smoke_cases", lambda: [_WrongTritonCase()])
    out = tmp_path / "wrong.json"
    assert bench.main(["--smoke", "--batches", "1", "--out", str(out)]) == 1
    result = json.loads(out.read_text())
    assert not result["ok"] and len(result["failures"]) == 1 and "triton" in result["failures"][0]
    triton = result["rows"][0]["impls"]["triton"]
    assert triton["ok"] is False and "median_ms" not in triton  # a wrong output is not timed


def test_reference_cases_cover_every_attention_stage() -> None:
    from search_spaces.reference import REFERENCE_ARCHS
    kinds = {"window": "window_attention", "linear": "linear_attention", "single_head": "single_head_attention",
             "strip": "strip_attention"}
    stages = {f"{name}.s{i}" for name, arch in REFERENCE_ARCHS.items() for i, stage in enumerate(arch.stages)
              if stage.mixer.kind in kinds}
    cases = bench.reference_cases()
    assert {c.shape_id.split("-")[0] for c in cases} - {"stress"} == stages
    assert len({c.shape_id for c in cases}) == len(cases)
    swin = {c.shape_id for c in cases if c.shape_id.startswith("swin_t_like")}
    assert swin == {"swin_t_like.s0-56x56-C96-h3-M7-shift3", "swin_t_like.s1-28x28-C192-h6-M7-shift3",
                    "swin_t_like.s2-14x14-C384-h12-M7-shift3", "swin_t_like.s3-7x7-C768-h24-M7-shift0"}


@pytest.mark.parametrize(("name", "slug", "bandwidth", "flops"), [
    ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3", 3.35e12, 989e12),
    ("NVIDIA H100 PCIe", "nvidia-h100-pcie", 2.0e12, 756e12),
    ("NVIDIA H200", "nvidia-h200", 4.8e12, 989e12),
    ("NVIDIA A100-SXM4-80GB", "nvidia-a100-sxm4-80gb", 2.039e12, 312e12),
    ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "nvidia-h100-80gb-hbm3-mig-1g-10gb", None, None),
    ("NVIDIA GeForce RTX 4090", "nvidia-geforce-rtx-4090", None, None),
], ids=lambda v: v if isinstance(v, str) else None)
def test_device_slug_and_peaks(name: str, slug: str, bandwidth: float | None, flops: float | None) -> None:
    assert bench.device_slug(name) == slug
    assert bench.device_peaks(name)[:2] == (bandwidth, flops)
