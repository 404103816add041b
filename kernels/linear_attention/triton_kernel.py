"""Triton forward kernel of L2ViT linear global attention (LGA); reference in `naive.py`.

Per (batch, head), with phi = ReLU:
``S = sum_n phi(k_n)^T v_n`` (D x D), ``z = sum_n phi(k_n)`` (D),
``out_n = temperature[h] * phi(q_n) S / max(phi(q_n) . z, floor)``.

Design (why three small kernels). The state S and z are sums over all N tokens, so the op has a reduction
phase and an apply phase. At B=1, heads=3 there are only 3 (batch, head) pairs: one program per pair that loops
over N=3136 would use 3 of an H100's 132 SMs. So the token axis is split:

1. ``_state_partial_kernel``, grid ``(pairs, splits)``: each program sums phi(K)^T V and phi(K) over its slice of
   tokens (a loop over BLOCK_N-token tiles, fp32 accumulators) and stores the fp32 partial in a workspace
   ``[pairs, splits, D_PAD * D_PAD + D_PAD]`` (S row-major, then z).
2. ``_state_reduce_kernel``, grid ``(pairs, cdiv(E, BLOCK_E))``: sums the partials over the split axis in one
   ``[SPLITS_PAD, BLOCK_E]`` tile load per program (no serial loop over splits). Skipped when ``splits == 1``
   (then kernel 1 writes the final state directly), which is the case once pairs alone fill the GPU.
3. ``_apply_kernel``, grid ``(pairs * cdiv(N, BLOCK_N),)``: loads the pair's fp32 state once and computes
   ``phi(Q) S`` for a tile of tokens, the normaliser, the floor and the temperature, and stores in q's dtype.

A fixed two-step reduction (not fp32 atomics) keeps results deterministic run to run and needs no zeroed buffer;
it costs one extra launch only when N is split. The number of splits aims at a few programs per SM
(`_configs`), capped at ``_MAX_SPLITS`` so the reduce tile stays small.

All sums are fp32 (loads are cast to fp32), so fp16 inputs whose token sums exceed fp16's range do not overflow.
Dots on fp32 operands use ``tf32x3`` (three tensor-core passes, ~fp32 accuracy); phase 1 with fp16/bf16 inputs
uses plain ``tf32``, which is exact there because every fp16/bf16 value is a tf32 value (products are exact and
accumulate in fp32).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels._triton import num_sms

__all__ = ["linear_attention_triton"]

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_HEAD_DIM = 128
_MAX_SPLITS = 64
_REDUCE_TILE_ELEMENTS = 8192


@triton.jit
def _relu(x):
    # tl.where(x < 0, 0, x) keeps NaN (torch.relu propagates NaN; tl.maximum(x, 0) would turn it into 0).
    return tl.where(x < 0.0, 0.0, x)


@triton.jit
def _state_partial_kernel(
    k_ptr, v_ptr, ws_ptr,
    N, HEADS, D, TOKENS_PER_SPLIT,
    stride_kb, stride_kn, stride_kh, stride_kd,
    stride_vb, stride_vn, stride_vh, stride_vd,
    stride_ws_pair, stride_ws_split,
    D_PAD: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pair = tl.program_id(0)
    split = tl.program_id(1)
    b = (pair // HEADS).to(tl.int64)
    h = (pair % HEADS).to(tl.int64)

    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    mask_d = offs_d < D
    k_base = k_ptr + b * stride_kb + h * stride_kh + offs_d[None, :] * stride_kd
    v_base = v_ptr + b * stride_vb + h * stride_vh + offs_d[None, :] * stride_vd

    state = tl.zeros((D_PAD, D_PAD), dtype=tl.float32)
    k_sum = tl.zeros((D_PAD,), dtype=tl.float32)
    start = split * TOKENS_PER_SPLIT
    stop = tl.minimum(start + TOKENS_PER_SPLIT, N)
    for n0 in range(start, stop, BLOCK_N):
        tokens = n0 + offs_n
        mask = (tokens < stop)[:, None] & mask_d[None, :]
        rows = tokens.to(tl.int64)[:, None]
        k = tl.load(k_base + rows * stride_kn, mask=mask, other=0.0).to(tl.float32)
        v = tl.load(v_base + rows * stride_vn, mask=mask, other=0.0).to(tl.float32)
        k = _relu(k)
        state = tl.dot(tl.trans(k), v, state, input_precision=DOT_PRECISION)
        k_sum += tl.sum(k, axis=0)

    ws = ws_ptr + pair.to(tl.int64) * stride_ws_pair + split.to(tl.int64) * stride_ws_split
    tl.store(ws + offs_d[:, None] * D_PAD + offs_d[None, :], state)
    tl.store(ws + D_PAD * D_PAD + offs_d, k_sum)


@triton.jit
def _state_reduce_kernel(
    ws_ptr, state_ptr,
    SPLITS, E,
    stride_ws_pair, stride_ws_split, stride_state_pair,
    SPLITS_PAD: tl.constexpr, BLOCK_E: tl.constexpr,
):
    pair = tl.program_id(0)
    offs_e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_s = tl.arange(0, SPLITS_PAD)
    mask = (offs_s < SPLITS)[:, None] & (offs_e < E)[None, :]
    ws = ws_ptr + pair.to(tl.int64) * stride_ws_pair
    partials = tl.load(ws + offs_s[:, None] * stride_ws_split + offs_e[None, :], mask=mask, other=0.0)
    tl.store(state_ptr + pair.to(tl.int64) * stride_state_pair + offs_e, tl.sum(partials, axis=0),
             mask=offs_e < E)


@triton.jit
def _apply_kernel(
    q_ptr, state_ptr, temperature_ptr, out_ptr,
    N, HEADS, D, floor,
    stride_qb, stride_qn, stride_qh, stride_qd,
    stride_state_pair,
    stride_ob, stride_on, stride_oh,
    D_PAD: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # 1-D grid, token tiles fastest: no 65535 limit on pairs, and neighbouring programs share one state.
    tiles = tl.cdiv(N, BLOCK_N)
    pid = tl.program_id(0)
    pair = pid // tiles
    pid_n = pid % tiles
    b = (pair // HEADS).to(tl.int64)
    h = (pair % HEADS).to(tl.int64)

    offs_d = tl.arange(0, D_PAD)
    mask_d = offs_d < D
    tokens = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (tokens < N)[:, None] & mask_d[None, :]
    rows = tokens.to(tl.int64)[:, None]

    st = state_ptr + pair.to(tl.int64) * stride_state_pair
    state = tl.load(st + offs_d[:, None] * D_PAD + offs_d[None, :])  # padded rows/cols are zero
    k_sum = tl.load(st + D_PAD * D_PAD + offs_d)
    temperature = tl.load(temperature_ptr + h).to(tl.float32)

    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + rows * stride_qn + offs_d[None, :] * stride_qd,
                mask=mask, other=0.0).to(tl.float32)
    q = _relu(q)
    numerator = tl.dot(q, state, input_precision=DOT_PRECISION)  # [BLOCK_N, D_PAD]
    denominator = tl.sum(q * k_sum[None, :], axis=1)
    denominator = tl.maximum(denominator, floor, propagate_nan=tl.PropagateNan.ALL)
    out = numerator * (temperature / denominator)[:, None]

    out_ptrs = out_ptr + b * stride_ob + h * stride_oh + rows * stride_on + offs_d[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)


@dataclass(frozen=True)
class _Config:
    d_pad: int
    splits: int
    tokens_per_split: int
    block_n_state: int
    block_n_apply: int
    splits_pad: int
    block_e: int
    num_warps_state: int
    num_warps_apply: int
    dot_precision_state: str
    dot_precision_apply: str


def _configs(n_tokens: int, head_dim: int, pairs: int, num_sms: int, kv_dtype: torch.dtype) -> _Config:
    """Block sizes, warps, token splits and dot precisions for one call (see the module docstring)."""
    d_pad = max(16, triton.next_power_of_2(head_dim))
    block_n_state = 64 if d_pad <= 64 else 32
    block_n_apply = 64 if d_pad <= 64 else 32
    # Split N so that the state phase has about 4 programs per SM, at least one BLOCK_N tile per split.
    tiles = triton.cdiv(n_tokens, block_n_state)
    wanted = min(triton.cdiv(4 * num_sms, pairs), tiles, _MAX_SPLITS)
    tokens_per_split = triton.cdiv(tiles, wanted) * block_n_state
    splits = triton.cdiv(n_tokens, tokens_per_split)
    splits_pad = max(16, triton.next_power_of_2(splits))
    block_e = max(16, _REDUCE_TILE_ELEMENTS // splits_pad)
    half_inputs = kv_dtype in (torch.float16, torch.bfloat16)
    return _Config(
        d_pad=d_pad, splits=splits, tokens_per_split=tokens_per_split,
        block_n_state=block_n_state, block_n_apply=block_n_apply,
        splits_pad=splits_pad, block_e=block_e,
        num_warps_state=4 if d_pad <= 32 else 8, num_warps_apply=4 if d_pad <= 64 else 8,
        dot_precision_state="tf32" if half_inputs else "tf32x3",
        dot_precision_apply="tf32x3",
    )


def linear_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor,
                            floor: float) -> torch.Tensor:
    """Fused forward of L2ViT linear attention (no autograd).

    Args:
        q, k, v: ``[B, N, heads, D]``, any strides, fp32/fp16/bf16, ``D <= 128``.
        temperature: ``[heads]``, any float dtype (read as fp32), on the same device.
        floor: lower bound of the normaliser, > 0.
    Returns:
        ``[B, N, heads, D]`` contiguous, in q's dtype.
    """
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"linear_attention_triton: q, k, v must share one [B, N, heads, D] shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    batch, n_tokens, heads, head_dim = q.shape
    if tuple(temperature.shape) != (heads,):
        raise ValueError(f"linear_attention_triton: temperature must be [{heads}], got {list(temperature.shape)}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dtype not in _SUPPORTED_DTYPES:
            raise TypeError(f"linear_attention_triton: {name} has dtype {t.dtype}; expected one of "
                            f"{', '.join(str(d) for d in _SUPPORTED_DTYPES)} (backend='torch' takes others)")
    if not temperature.is_floating_point():
        raise TypeError(f"linear_attention_triton: temperature must be floating point, got {temperature.dtype}")
    for name, t in (("k", k), ("v", v), ("temperature", temperature)):
        if t.device != q.device:
            raise ValueError(f"linear_attention_triton: {name} is on {t.device} but q is on {q.device}")
    if head_dim > _MAX_HEAD_DIM:
        raise ValueError(f"linear_attention_triton: head dim {head_dim} > {_MAX_HEAD_DIM} is not supported; "
                         f"use backend='torch'")
    if not floor > 0:
        raise ValueError(f"linear_attention_triton: floor must be > 0, got {floor}")

    out = torch.empty((batch, n_tokens, heads, head_dim), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    pairs = batch * heads
    # The state phase reads k and v: plain tf32 is exact only when both are fp16/bf16.
    cfg = _configs(n_tokens, head_dim, pairs, num_sms(q.device), k.dtype if k.dtype == v.dtype else torch.float32)
    d_pad = cfg.d_pad
    elements = d_pad * d_pad + d_pad  # S row-major, then z
    temperature = temperature.to(torch.float32).contiguous()  # [heads]: no-op when already so

    state = torch.empty((pairs, elements), dtype=torch.float32, device=q.device)
    ws = state.view(pairs, 1, elements) if cfg.splits == 1 else \
        torch.empty((pairs, cfg.splits, elements), dtype=torch.float32, device=q.device)

    _state_partial_kernel[(pairs, cfg.splits)](
        k, v, ws,
        n_tokens, heads, head_dim, cfg.tokens_per_split,
        *k.stride(), *v.stride(),
        ws.stride(0), ws.stride(1),
        D_PAD=d_pad, BLOCK_N=cfg.block_n_state, DOT_PRECISION=cfg.dot_precision_state,
        num_warps=cfg.num_warps_state,
    )
    if cfg.splits > 1:
        _state_reduce_kernel[(pairs, triton.cdiv(elements, cfg.block_e))](
            ws, state,
            cfg.splits, elements,
            ws.stride(0), ws.stride(1), state.stride(0),
            SPLITS_PAD=cfg.splits_pad, BLOCK_E=cfg.block_e,
            num_warps=4,
        )
    _apply_kernel[(pairs * triton.cdiv(n_tokens, cfg.block_n_apply),)](
        q, state, temperature, out,
        n_tokens, heads, head_dim, float(floor),
        *q.stride(),
        state.stride(0),
        out.stride(0), out.stride(1), out.stride(2),
        D_PAD=d_pad, BLOCK_N=cfg.block_n_apply, DOT_PRECISION=cfg.dot_precision_apply,
        num_warps=cfg.num_warps_apply,
    )
    return out
