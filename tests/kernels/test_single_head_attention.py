"""SHViT single-head attention: Triton kernel vs the PyTorch reference, and backend dispatch.

Without a GPU the kernel runs in Triton's interpreter (tests/conftest.py), where each program costs about 0.5 ms:
shapes stay small and odd (N not a multiple of any block, Dv not a multiple of 8).
"""
from __future__ import annotations

import logging

import pytest
import torch
import triton

from kernels import _dispatch
from kernels.single_head_attention import single_head_attention
from kernels.single_head_attention import triton_kernel
from kernels.single_head_attention.triton_kernel import _Config, _configs, single_head_attention_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCES = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=2e-3, rtol=2e-3),
              torch.bfloat16: dict(atol=1e-2, rtol=1e-2)}


def _make_qkv(batch: int, n_tokens: int, d_qk: int, d_v: int, dtype: torch.dtype, layout: str,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k ``[B, N, Dqk]``, v ``[B, N, Dv]``; ``conv``: transposed views of one ``[B, C, N]`` tensor (token stride
    1, channel stride N), as SHViT gets them from its 1x1 conv; ``contiguous``: three contiguous tensors."""
    gen = torch.Generator().manual_seed(seed)
    if layout == "conv":
        x = torch.randn(batch, 2 * d_qk + d_v, n_tokens, generator=gen).to(device=DEVICE, dtype=dtype)
        q, k, v = (t.transpose(1, 2) for t in x.split([d_qk, d_qk, d_v], dim=1))
        assert q.stride(1) == 1 and q.stride(2) == n_tokens
        return q, k, v
    return tuple(torch.randn(batch, n_tokens, d, generator=gen).to(device=DEVICE, dtype=dtype)
                 for d in (d_qk, d_qk, d_v))


def _assert_matches_reference(out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                              **tolerance: float) -> None:
    expected = single_head_attention(q, k, v, scale, backend="torch")
    assert out.shape == expected.shape and out.dtype == expected.dtype and out.is_contiguous()
    torch.testing.assert_close(out.float(), expected.float(), **tolerance)


# (B, N, Dqk, Dv): N = 7x7, 13x17, 70; Dv not a multiple of 8 in two of them.
SHAPES = [(2, 49, 16, 36), (1, 221, 24, 68), (2, 70, 32, 48), (1, 221, 16, 48)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("layout", ["conv", "contiguous"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"B{b}-N{n}-Dqk{dqk}-Dv{dv}" for b, n, dqk, dv in SHAPES])
def test_matches_reference(shape: tuple[int, int, int, int], layout: str, dtype: torch.dtype) -> None:
    batch, n_tokens, d_qk, d_v = shape
    q, k, v = _make_qkv(batch, n_tokens, d_qk, d_v, dtype, layout)
    out = single_head_attention(q, k, v, d_qk ** -0.5, backend="triton")
    _assert_matches_reference(out, q, k, v, d_qk ** -0.5, **TOLERANCES[dtype])


# Configs the small test shapes never get from `_configs`: wide query blocks, all of v in one chunk, and several
# key blocks with a masked tail (N=70 over BLOCK_N=16/32).
CONFIGS = [_Config(BLOCK_M=64, BLOCK_N=32, BLOCK_DV=128, num_warps=4, num_stages=2),
           _Config(BLOCK_M=128, BLOCK_N=16, BLOCK_DV=64, num_warps=8, num_stages=2),
           _Config(BLOCK_M=32, BLOCK_N=64, BLOCK_DV=16, num_warps=4, num_stages=2)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"M{c.BLOCK_M}-N{c.BLOCK_N}-DV{c.BLOCK_DV}")
def test_explicit_configs(config: _Config) -> None:
    q, k, v = _make_qkv(2, 70, 16, 68, torch.float32, "conv", seed=1)
    out = single_head_attention_triton(q, k, v, 0.25, config=config)
    _assert_matches_reference(out, q, k, v, 0.25, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("kind", ["offset", "peaked"])
def test_large_logits_do_not_overflow(kind: str, dtype: torch.dtype) -> None:
    """Logits far beyond exp's fp32 range (~88): a shared offset of 400, or +-4000 (nearly one-hot rows)."""
    q, k, v = _make_qkv(2, 70, 16, 36, torch.float32, "contiguous", seed=2)
    if kind == "offset":
        q[..., 0], k[..., 0] = 40.0, 40.0
    else:
        q, k = q * 30.0, k * 30.0
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    logits = (q.float() @ k.float().transpose(1, 2)) * 0.25
    assert torch.exp(logits).isinf().any()
    out = single_head_attention(q, k, v, 0.25, backend="triton")
    assert out.isfinite().all()
    # fp32 rounding of logits of size 400..4000 alone moves them by ~1e-4, in the reference as in the kernel.
    tolerance = dict(atol=5e-4, rtol=1e-4) if dtype == torch.float32 else TOLERANCES[dtype]
    _assert_matches_reference(out, q, k, v, 0.25, **tolerance)


def test_bf16_and_mixed_dtypes() -> None:
    q, k, v = _make_qkv(1, 49, 16, 36, torch.bfloat16, "conv", seed=3)
    _assert_matches_reference(single_head_attention(q, k, v, 0.25, backend="triton"), q, k, v, 0.25,
                              **TOLERANCES[torch.bfloat16])
    # Half q/k with fp32 v: the output takes q's dtype, as in the reference.
    q, k, v = q.half(), k.half(), v.float()
    _assert_matches_reference(single_head_attention(q, k, v, 0.25, backend="triton"), q, k, v, 0.25,
                              **TOLERANCES[torch.float16])


def test_empty_and_bad_inputs() -> None:
    q, k, v = _make_qkv(2, 0, 16, 36, torch.float32, "contiguous")
    assert single_head_attention(q, k, v, 0.25, backend="triton").shape == (2, 0, 36)
    with pytest.raises(ValueError, match="need q, k"):
        single_head_attention_triton(q, k[:, :, :8], v, 0.25)
    with pytest.raises(TypeError, match="torch.int32"):
        single_head_attention_triton(q.int(), k, v, 0.25)


@pytest.mark.parametrize("half_dots", [True, False], ids=["half", "fp32"])
@pytest.mark.parametrize("batch, n_tokens, d_v", [(1, 196, 64), (1, 49, 68), (64, 196, 68), (256, 49, 32),
                                                  (8, 3136, 48), (1, 16, 100), (4096, 16, 8)])
def test_configs_are_valid(batch: int, n_tokens: int, d_v: int, half_dots: bool) -> None:
    cfg = _configs(batch, n_tokens, d_v, half_dots, torch.device("cpu"))
    for block in (cfg.BLOCK_M, cfg.BLOCK_N, cfg.BLOCK_DV):
        assert block >= 16 and block & (block - 1) == 0
    assert cfg.BLOCK_DV <= 128 and cfg.BLOCK_N <= max(16, triton.next_power_of_2(n_tokens))
    if batch * n_tokens >= 64 * 132:      # enough query blocks to fill an H100 without tiny tiles
        assert cfg.BLOCK_M >= 64 and cfg.BLOCK_DV >= min(d_v, 64)
    if batch == 1 and n_tokens <= 196:    # SHViT at batch 1: small query blocks for more programs
        assert cfg.BLOCK_M == 16


def _raise_if_called(*args: object, **kwargs: object) -> torch.Tensor:
    raise AssertionError("the Triton kernel ran; the reference was expected")


def test_cpu_tensors_without_backend_use_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_dispatch.BACKEND_ENV_VAR, raising=False)
    monkeypatch.setattr(triton_kernel, "single_head_attention_triton", _raise_if_called)
    q, k, v = (t.cpu() for t in _make_qkv(1, 49, 16, 36, torch.float32, "conv"))
    out = single_head_attention(q, k, v, 0.25)
    torch.testing.assert_close(out, single_head_attention(q, k, v, 0.25, backend="torch"))


def test_gradients_fall_back_to_reference(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(triton_kernel, "single_head_attention_triton", _raise_if_called)
    monkeypatch.setattr(_dispatch, "_fallbacks_logged", set())
    q, k, v = (t.detach().requires_grad_() for t in _make_qkv(1, 49, 16, 36, torch.float32, "contiguous"))
    with caplog.at_level(logging.WARNING, logger=_dispatch.__name__):
        out = single_head_attention(q, k, v, 0.25, backend="triton")
    assert "forward-only" in caplog.text
    out.square().sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (q, k, v))
