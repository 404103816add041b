"""CSWin stripe attention: the Triton kernel against the PyTorch reference, and the backend dispatch.

Without a GPU the kernel runs under Triton's interpreter (see tests/conftest.py), so shapes stay small.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from kernels.strip_attention import strip_attention
from kernels.strip_attention import triton_kernel

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCES = {  # (atol, rtol)
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


@dataclass(frozen=True)
class Case:
    batch: int
    height: int
    width: int
    heads: int
    head_dim: int
    stripe_width: int

    def __str__(self) -> str:
        return (f"b{self.batch}-{self.height}x{self.width}-sw{self.stripe_width}-heads{self.heads}"
                f"-d{self.head_dim}")


CASES = [
    Case(1, 7, 7, 2, 16, 7),    # sw = map size: full attention
    Case(2, 13, 17, 4, 24, 3),  # sw divides neither side: narrower last stripes; non-square map
    Case(1, 9, 5, 2, 32, 2),
    Case(1, 6, 9, 2, 16, 1),    # one-token-wide stripes
    Case(1, 5, 6, 2, 24, 6),    # sw = W and sw > H: full attention in both branches
    Case(1, 8, 8, 4, 64, 3),
]


def _qkv(case: Case, dtype: torch.dtype, layout: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v ``[B, H, W, heads, D]`` in one of three memory layouts."""
    b, h, w, n, d = case.batch, case.height, case.width, case.heads, case.head_dim
    gen = torch.Generator().manual_seed(0)
    if layout == "contiguous":
        q, k, v = (torch.randn(b, h, w, n, d, generator=gen) for _ in range(3))
    elif layout == "qkv-view":  # views of one qkv projection whose channels are padded: D is not the last stride
        q, k, v = torch.randn(b, h, w, 3, n, d + 3, generator=gen)[..., :d].unbind(3)
    elif layout == "transposed":  # spatial strides swapped, heads outermost
        q, k, v = torch.randn(3, b, n, w, h, d, generator=gen).permute(0, 1, 4, 3, 2, 5).unbind(0)
    else:
        raise ValueError(layout)
    return tuple(t.to(device=DEVICE, dtype=dtype) for t in (q, k, v))


def _check_against_reference(case: Case, dtype: torch.dtype, layout: str) -> None:
    q, k, v = _qkv(case, dtype, layout)
    scale = case.head_dim ** -0.5
    got = strip_attention(q, k, v, case.stripe_width, scale, backend="triton")
    want = strip_attention(q, k, v, case.stripe_width, scale, backend="torch")
    assert got.shape == want.shape and got.dtype == dtype and got.is_contiguous()
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(got.float(), want.float(), atol=atol, rtol=rtol)


@pytest.mark.parametrize("layout", ["qkv-view", "transposed"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_reference_fp32(case: Case, layout: str) -> None:
    _check_against_reference(case, torch.float32, layout)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", CASES[:3], ids=str)
def test_matches_reference_half(case: Case, dtype: torch.dtype) -> None:
    _check_against_reference(case, dtype, "qkv-view")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", [Case(1, 13, 17, 2, 24, 3), Case(1, 9, 9, 2, 32, 9)], ids=str)
def test_several_query_and_key_blocks(case: Case, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """16-token blocks split the stripes (up to 81 tokens) into several query and key blocks: online softmax."""
    monkeypatch.setattr(triton_kernel, "_configs", lambda *args: triton_kernel._Config(16, 16, 4, 2))
    _check_against_reference(case, dtype, "contiguous")


def test_empty_batch() -> None:
    q, k, v = _qkv(Case(0, 5, 6, 2, 16, 2), torch.float32, "contiguous")
    assert strip_attention(q, k, v, 2, 0.25, backend="triton").shape == (0, 5, 6, 2, 16)


def test_launcher_rejects_bad_dtype() -> None:
    q, k, v = _qkv(Case(1, 5, 6, 2, 16, 2), torch.float32, "contiguous")
    with pytest.raises(TypeError, match="dtype"):
        triton_kernel.strip_attention_triton(q.double(), k.double(), v.double(), 2, 0.25)


def test_odd_heads_rejected() -> None:
    q, k, v = _qkv(Case(1, 5, 6, 3, 16, 2), torch.float32, "contiguous")
    with pytest.raises(ValueError, match="even number of heads"):
        strip_attention(q, k, v, 2, 0.25, backend="triton")


def _no_triton(*args: object) -> torch.Tensor:
    raise AssertionError("the Triton kernel must not run here")


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks Triton for CUDA tensors")
def test_auto_backend_on_cpu_runs_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYBRID_NAS_KERNELS", raising=False)
    monkeypatch.setattr(triton_kernel, "strip_attention_triton", _no_triton)
    q, k, v = _qkv(Case(1, 5, 6, 2, 16, 2), torch.float32, "qkv-view")
    out = strip_attention(q, k, v, 2, 0.25, backend=None)
    torch.testing.assert_close(out, strip_attention(q, k, v, 2, 0.25, backend="torch"))


def test_gradients_fall_back_to_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triton_kernel, "strip_attention_triton", _no_triton)
    q, k, v = (t.detach().requires_grad_() for t in _qkv(Case(1, 5, 6, 2, 16, 2), torch.float32, "contiguous"))
    strip_attention(q, k, v, 2, 0.25, backend="triton").square().sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and t.grad.shape == t.shape
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
