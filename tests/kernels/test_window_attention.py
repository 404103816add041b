"""Swin window attention: Triton kernel (interpreter on CPU) against the PyTorch reference, and backend dispatch."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
import torch

from kernels import _dispatch
from kernels._dispatch import BACKEND_ENV_VAR
from kernels.window_attention import window_attention
from kernels.window_attention import triton_kernel

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCES = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=2e-3, rtol=1e-3),
              torch.bfloat16: dict(atol=1.6e-2, rtol=1e-2)}


@dataclass(frozen=True)
class Case:
    batch: int
    height: int
    width: int
    heads: int
    head_dim: int
    window_size: int
    shift_size: int

    def __str__(self) -> str:
        shift = f"-shift{self.shift_size}" if self.shift_size else ""
        return f"{self.height}x{self.width}-M{self.window_size}{shift}-D{self.head_dim}"


CASES = [
    Case(batch=1, height=7, width=7, heads=2, head_dim=16, window_size=7, shift_size=0),  # one full window
    Case(batch=2, height=13, width=17, heads=2, head_dim=24, window_size=7, shift_size=3),  # padding + shift
    Case(batch=1, height=5, width=9, heads=3, head_dim=32, window_size=4, shift_size=2),  # padding + shift, M*M=16
    Case(batch=1, height=20, width=15, heads=1, head_dim=16, window_size=12, shift_size=5),  # 144 tokens: 3 q chunks
    Case(batch=1, height=4, width=6, heads=2, head_dim=16, window_size=7, shift_size=3),  # map smaller than a window
]


def _qkv_view(case: Case, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as non-contiguous views of one ``[B, H, W, 3, heads, D]`` projection, as a Swin block makes them."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(case.batch, case.height, case.width, 3, case.heads, case.head_dim, generator=gen)
    return tuple(t for t in qkv.to(device=DEVICE, dtype=dtype).unbind(3))


def _table(case: Case, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    size = 2 * case.window_size - 1
    return torch.randn(case.heads, size, size, generator=gen).to(DEVICE)


def _compare(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor | None, case: Case) -> None:
    args = (q, k, v, table, case.window_size, case.shift_size, case.head_dim ** -0.5)
    got = window_attention(*args, backend="triton")
    want = window_attention(*args, backend="torch")
    assert got.shape == want.shape and got.dtype == q.dtype and got.is_contiguous()
    torch.testing.assert_close(got, want, **TOLERANCES[q.dtype])


@pytest.mark.parametrize("with_bias", [True, False], ids=["rel_bias", "no_bias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_reference(case: Case, dtype: torch.dtype, with_bias: bool) -> None:
    q, k, v = _qkv_view(case, dtype)
    assert not q.is_contiguous()
    _compare(q, k, v, _table(case) if with_bias else None, case)


@pytest.mark.parametrize("head_dim", [16, 24, 32], ids=lambda d: f"D{d}")
def test_head_dims_with_padding_and_shift(head_dim: int) -> None:
    case = Case(batch=1, height=13, width=17, heads=1, head_dim=head_dim, window_size=7, shift_size=3)
    q, k, v = _qkv_view(case, torch.float32, seed=head_dim)
    _compare(q, k, v, _table(case), case)


def test_odd_strides() -> None:
    """Separate q, k, v with permuted layouts (head dim not innermost) and a non-contiguous bias table."""
    case = Case(batch=2, height=6, width=10, heads=2, head_dim=24, window_size=4, shift_size=1)
    q, k, v = _qkv_view(case, torch.float32, seed=3)
    q = q.permute(4, 0, 1, 2, 3).contiguous().permute(1, 2, 3, 4, 0)  # [D, B, H, W, heads] memory
    k = k.transpose(1, 2).contiguous().transpose(1, 2)  # H and W swapped in memory
    table = _table(case).transpose(1, 2).contiguous().transpose(1, 2)
    assert q.stride(-1) != 1 and not table.is_contiguous()
    _compare(q, k, v.contiguous(), table, case)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 arithmetic is wrong in the Triton interpreter")
def test_bf16_matches_reference() -> None:
    case = CASES[1]
    q, k, v = _qkv_view(case, torch.bfloat16)
    _compare(q, k, v, _table(case), case)


def test_rejects_too_large_window() -> None:
    case = Case(batch=1, height=17, width=17, heads=1, head_dim=16, window_size=17, shift_size=0)
    q, k, v = _qkv_view(case, torch.float32)
    with pytest.raises(ValueError, match="backend='torch'"):
        triton_kernel.window_attention_triton(q, k, v, None, 17, 0, 0.25)


def _triton_must_not_run(*args: object) -> torch.Tensor:
    raise AssertionError("the Triton kernel ran, but the reference was expected")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU route of 'auto'")
def test_auto_on_cpu_runs_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    monkeypatch.setattr(triton_kernel, "window_attention_triton", _triton_must_not_run)
    case = CASES[2]
    q, k, v = _qkv_view(case, torch.float32)
    out = window_attention(q, k, v, _table(case), case.window_size, case.shift_size, 0.5)
    assert out.shape == q.shape


def test_requires_grad_falls_back_to_reference(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(triton_kernel, "window_attention_triton", _triton_must_not_run)
    monkeypatch.setattr(_dispatch, "_fallbacks_logged", set())
    case = CASES[2]
    q, k, v = (t.detach().requires_grad_() for t in _qkv_view(case, torch.float32))
    table = _table(case).requires_grad_()
    with caplog.at_level(logging.WARNING, logger="kernels._dispatch"):
        out = window_attention(q, k, v, table, case.window_size, case.shift_size, 0.5, backend="triton")
    assert "forward-only" in caplog.text
    out.square().sum().backward()
    for t in (q, k, v, table):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
