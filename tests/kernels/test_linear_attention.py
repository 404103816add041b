"""Triton L2ViT linear attention against the PyTorch reference, and the op's backend dispatch.

On machines without CUDA, `tests/conftest.py` runs Triton through its interpreter (each program costs ~0.5 ms),
so the shapes are small but odd: N = 49 and 221 (= 13 x 17), D = 16/24/32/64, heads 1 and 3.
"""
from __future__ import annotations

import logging

import pytest
import torch

from kernels import _dispatch as dispatch
from kernels.linear_attention import triton_kernel
from kernels.linear_attention import linear_attention
from kernels.linear_attention.naive import linear_attention_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (id, B, N, heads, D)
SHAPES = [
    ("B2-N49-H3-D32", 2, 49, 3, 32),
    ("B1-N221-H1-D24", 1, 221, 1, 24),
    ("B2-N221-H3-D16", 2, 221, 3, 16),
    ("B1-N49-H1-D64", 1, 49, 1, 64),
]
# dtype -> absolute tolerance as a fraction of the reference's largest |output|
TOLERANCES = {torch.float32: 1e-5, torch.float16: 2e-3}


def _qkv(batch: int, n_tokens: int, heads: int, head_dim: int, dtype: torch.dtype, *, d_strided: bool = False,
         seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as non-contiguous views of one qkv projection output, like the model makes them."""
    gen = torch.Generator().manual_seed(seed)
    if d_strided:  # [B, N, heads, D, 3]: stride 3 along D
        qkv = torch.randn(batch, n_tokens, heads, head_dim, 3, generator=gen).to(DEVICE, dtype)
        return qkv[..., 0], qkv[..., 1], qkv[..., 2]
    qkv = torch.randn(batch, n_tokens, 3, heads, head_dim, generator=gen).to(DEVICE, dtype)
    return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]


def _denominators(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """phi(q_n) . sum_m phi(k_m) per [B, N, heads], before the floor (as the reference computes it)."""
    k_sum = torch.relu(k.float()).sum(dim=1)
    return torch.einsum("bnhd,bhd->bnh", torch.relu(q.float()), k_sum)


def _temperature(heads: int) -> torch.Tensor:
    return torch.linspace(0.5, 1.5, heads, device=DEVICE)


def _assert_matches_reference(q, k, v, temperature, floor, rel_atol):
    out = linear_attention(q, k, v, temperature, floor, backend="triton")
    ref = linear_attention(q, k, v, temperature, floor, backend="torch")
    assert out.shape == ref.shape and out.dtype == ref.dtype == q.dtype
    assert out.is_contiguous()
    scale = ref.float().abs().max().item()
    torch.testing.assert_close(out.float(), ref.float(), atol=rel_atol * scale, rtol=0)


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("floor_regime", ["floor-mixed", "floor-inactive"])
@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
def test_matches_reference(shape, floor_regime, dtype):
    _, batch, n_tokens, heads, head_dim = shape
    q, k, v = _qkv(batch, n_tokens, heads, head_dim, dtype)
    den = _denominators(q, k)
    if floor_regime == "floor-mixed":  # the floor clamps about half of the tokens
        floor = den.median().item()
        assert (den < floor).any() and (den > floor).any()
    else:
        assert den.min() > 0
        floor = 0.5 * den.min().item()
        assert (den > floor).all()
    _assert_matches_reference(q, k, v, _temperature(heads), floor, TOLERANCES[dtype])


def test_matches_reference_strided_head_dim():
    q, k, v = _qkv(1, 221, 3, 24, torch.float32, d_strided=True)
    assert q.stride(-1) == 3
    _assert_matches_reference(q, k, v, _temperature(3), 100.0, TOLERANCES[torch.float32])


@pytest.mark.parametrize("batch, heads, splits", [(2, 3, 1), (1, 2, 2)], ids=["1-split", "2-splits"])
def test_splits_spanning_several_token_tiles(monkeypatch, batch, heads, splits):
    """Few SMs -> few splits of N, each looping over several BLOCK_N tiles (the last one partial)."""
    monkeypatch.setattr(triton_kernel, "num_sms", lambda device: 1)
    cfg = triton_kernel._configs(221, 32, batch * heads, 1, torch.float32)
    assert cfg.splits == splits and cfg.tokens_per_split >= 2 * cfg.block_n_state
    q, k, v = _qkv(batch, 221, heads, 32, torch.float32)
    _assert_matches_reference(q, k, v, _temperature(heads), 100.0, TOLERANCES[torch.float32])


def test_matches_reference_bf16():
    # Loads are cast to fp32 at once, so the interpreter's bf16 arithmetic is not involved; the final rounding to
    # bf16 may differ by one ulp (2 ** -8 relative).
    q, k, v = _qkv(1, 221, 3, 32, torch.bfloat16)
    _assert_matches_reference(q, k, v, _temperature(3), 100.0, 1e-2)


def test_fp16_sums_accumulate_in_fp32():
    """Sums over N of large fp16 values overflow fp16 (to inf) but not the fp32 accumulators."""
    gen = torch.Generator().manual_seed(1)
    qkv = torch.rand(1, 221, 3, 2, 16, generator=gen) * 600.0 - 100.0  # in [-100, 500]
    qkv[:, :, 1] = qkv[:, :, 1] * (5.0 / 6.0) + 183.3  # k in [100, 600]: sums over 221 tokens ~ 77000 > 65504
    qkv = qkv.to(DEVICE, torch.float16)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    k_relu = torch.relu(k)
    assert torch.isinf(k_relu.sum(dim=1)).all()  # fp16 sum of phi(k) over tokens overflows
    assert torch.isinf(torch.einsum("bnhd,bnhe->bhde", k_relu.float(), v.float()).half()).any()
    out = linear_attention(q, k, v, _temperature(2), 100.0, backend="triton")
    assert torch.isfinite(out).all()
    ref = linear_attention_reference(q, k, v, _temperature(2), 100.0)
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-3 * ref.float().abs().max().item(), rtol=0)


def test_nan_propagates_like_reference():
    q, k, v = _qkv(2, 49, 3, 16, torch.float32)
    k = k.clone()
    k[0, 5, 1, 3] = float("nan")
    out = linear_attention(q, k, v, _temperature(3), 100.0, backend="triton")
    ref = linear_attention(q, k, v, _temperature(3), 100.0, backend="torch")
    assert torch.isnan(ref[0, :, 1]).all() and not torch.isnan(ref[1]).any()
    torch.testing.assert_close(out, ref, atol=1e-5 * ref[1].abs().max().item(), rtol=0, equal_nan=True)


@pytest.mark.parametrize("dtype, head_dim, error", [(torch.float64, 16, TypeError), (torch.float32, 160, ValueError)],
                         ids=["fp64", "D160"])
def test_launcher_rejects_unsupported_inputs(dtype, head_dim, error):
    q = torch.zeros(1, 4, 1, head_dim, dtype=dtype, device=DEVICE)
    with pytest.raises(error):
        triton_kernel.linear_attention_triton(q, q, q, torch.ones(1, device=DEVICE), 100.0)


def _forbid_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    def _raise(*args, **kwargs):
        raise AssertionError("the Triton kernel must not run here")
    monkeypatch.setattr(triton_kernel, "linear_attention_triton", _raise)


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks the kernel for CUDA tensors")
def test_auto_backend_on_cpu_runs_reference(monkeypatch):
    monkeypatch.delenv(dispatch.BACKEND_ENV_VAR, raising=False)
    _forbid_triton(monkeypatch)
    q, k, v = _qkv(1, 49, 3, 16, torch.float32)
    out = linear_attention(q, k, v, _temperature(3), 100.0, backend=None)
    torch.testing.assert_close(out, linear_attention_reference(q, k, v, _temperature(3), 100.0), rtol=0, atol=0)


@pytest.mark.parametrize("grad_input", ["q", "temperature"])
def test_inputs_needing_grad_fall_back_to_reference(monkeypatch, caplog, grad_input):
    """A learnable temperature (an nn.Parameter) alone sends the op to the reference while grad mode is on."""
    _forbid_triton(monkeypatch)
    monkeypatch.setattr(dispatch, "_fallbacks_logged", set())
    q, k, v = _qkv(1, 49, 3, 16, torch.float32)
    temperature = _temperature(3)
    leaf = {"q": q, "temperature": temperature}[grad_input].detach().requires_grad_(True)
    if grad_input == "q":
        q = leaf
    else:
        temperature = leaf
    with caplog.at_level(logging.WARNING, logger=dispatch.__name__):
        out = linear_attention(q, k, v, temperature, 100.0, backend="triton")
    assert "forward-only" in caplog.text
    out.square().sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


def test_no_grad_mode_runs_kernel_with_grad_inputs(monkeypatch):
    calls = []
    kernel = triton_kernel.linear_attention_triton

    def _spy(*args):
        calls.append(1)
        return kernel(*args)
    monkeypatch.setattr(triton_kernel, "linear_attention_triton", _spy)
    q, k, v = _qkv(1, 49, 1, 16, torch.float32)
    temperature = _temperature(1).requires_grad_(True)
    with torch.no_grad():
        linear_attention(q, k, v, temperature, 100.0, backend="triton")
    assert calls == [1]
