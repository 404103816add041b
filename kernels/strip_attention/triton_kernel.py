"""Triton forward kernel of CSWin cross-shaped stripe attention (semantics of `naive.strip_attention_reference`).

One program computes BLOCK_M queries of one stripe of one (batch, head) and streams the stripe's keys in blocks of
BLOCK_N with an online softmax in fp32 (flash-attention style). Tokens are addressed straight from the strides of
q, k, v (usually views of one qkv projection): nothing is copied into a stripe layout.

Both branches are the same computation on a map of ``n_rows x n_cols`` tokens cut into stripes of ``sw`` columns:
the vertical heads use the map as is (rows = H, cols = W), the horizontal heads its transpose (rows = W, cols = H),
which only swaps the row and column strides. Token ``t`` of stripe ``s`` (width ``sw_eff``, narrower for the last
stripe when ``sw`` does not divide ``n_cols``) sits at row ``t // sw_eff``, column ``s * sw + t % sw_eff``.
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels._triton import interpreting, num_sms

__all__ = ["strip_attention_triton"]

_LOG2_E = 1.4426950408889634
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_HEAD_DIM = 256


@triton.jit
def _strip_attention_fwd_kernel(
        q_ptr, k_ptr, v_ptr, o_ptr,
        stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
        stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
        stride_ob, stride_oh, stride_ow, stride_on,
        H, W, HEADS, STRIPE_WIDTH, n_m_blocks, n_stripes_max, qk_scale,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    # One flat grid axis (no 65535 limit on batch * heads), split as (query block, stripe, batch * head) with the
    # query blocks fastest, so the programs that share a stripe's keys run together.
    pid = tl.program_id(0)
    pid_m = pid % n_m_blocks
    rest = pid // n_m_blocks
    stripe = rest % n_stripes_max
    bh = rest // n_stripes_max
    b = bh // HEADS
    head = bh % HEADS

    horizontal = head >= HEADS // 2
    n_rows = tl.where(horizontal, W, H)
    n_cols = tl.where(horizontal, H, W)
    sw = tl.minimum(STRIPE_WIDTH, n_cols)
    col0 = stripe * sw
    sw_eff = tl.minimum(sw, n_cols - col0)
    seq_len = n_rows * sw_eff
    # The grid is sized for the larger branch; programs past this branch's stripes or tokens have nothing to do.
    if (col0 >= n_cols) | (pid_m * BLOCK_M >= seq_len):
        return

    q_row = tl.where(horizontal, stride_qw, stride_qh)
    q_col = tl.where(horizontal, stride_qh, stride_qw)
    k_row = tl.where(horizontal, stride_kw, stride_kh)
    k_col = tl.where(horizontal, stride_kh, stride_kw)
    v_row = tl.where(horizontal, stride_vw, stride_vh)
    v_col = tl.where(horizontal, stride_vh, stride_vw)
    o_row = tl.where(horizontal, stride_ow, stride_oh)
    o_col = tl.where(horizontal, stride_oh, stride_ow)
    b64 = b.to(tl.int64)
    q_base = q_ptr + b64 * stride_qb + head * stride_qn
    k_base = k_ptr + b64 * stride_kb + head * stride_kn
    v_base = v_ptr + b64 * stride_vb + head * stride_vn
    o_base = o_ptr + b64 * stride_ob + head * stride_on

    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < seq_len
    m_row = offs_m // sw_eff
    m_col = col0 + offs_m % sw_eff
    q = tl.load(q_base + (m_row * q_row + m_col * q_col)[:, None] + offs_d[None, :] * stride_qd,
                mask=m_mask[:, None] & d_mask[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for n_start in range(0, seq_len, BLOCK_N):
        offs_n = n_start + tl.arange(0, BLOCK_N)
        n_mask = offs_n < seq_len
        n_row = offs_n // sw_eff
        n_col = col0 + offs_n % sw_eff
        kt = tl.load(k_base + (n_row * k_row + n_col * k_col)[None, :] + offs_d[:, None] * stride_kd,
                     mask=n_mask[None, :] & d_mask[:, None], other=0.0)
        v = tl.load(v_base + (n_row * v_row + n_col * v_col)[:, None] + offs_d[None, :] * stride_vd,
                    mask=n_mask[:, None] & d_mask[None, :], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
            v = v.to(tl.float32)
        # Logits in log2 units; every key block holds at least one real key, so m_new is finite.
        s = tl.dot(q, kt, input_precision=INPUT_PRECISION) * qk_scale
        s = tl.where(n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=INPUT_PRECISION)
        m_i = m_new

    out = acc / l_i[:, None]
    tl.store(o_base + (m_row * o_row + m_col * o_col)[:, None] + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])


class _Config(NamedTuple):
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def _configs(max_seq_len: int, block_d: int, n_stripe_programs: int, n_sms: int | None) -> _Config:
    """Block sizes and launch settings for stripes of at most `max_seq_len` tokens.

    `n_stripe_programs` is the number of (batch, head, stripe) triples, `n_sms` the GPU's SM count (None under the
    interpreter, where every program instance is costly, so blocks are never shrunk there).
    CSWin stripes are short (56 tokens at sw=1 on 56x56, 98 at 14x14 sw=7, 49 at 7x7): one key block usually holds
    the whole stripe, so the kernel reads each key once per query block and the loop runs once.
    """
    seq_pow2 = max(16, triton.next_power_of_2(max_seq_len))
    block_n = min(seq_pow2, 128 if block_d <= 64 else 64)
    block_m = min(seq_pow2, 64)
    if n_sms is not None:
        # Small batches leave SMs idle: trade larger query blocks for more programs (each re-reads the stripe's
        # keys, which are few and stay in L2).
        while block_m > 16 and n_stripe_programs * triton.cdiv(max_seq_len, block_m) < 2 * n_sms:
            block_m //= 2
    # 64 x 128 tiles need two warpgroups to stay well below 255 registers per thread (sm_90 ptxas: ~160 with 8
    # warps, ~170-185 with 4 at D = 32-64).
    num_warps = 8 if block_m * block_n >= 64 * 128 else 4
    return _Config(block_m=block_m, block_n=block_n, num_warps=num_warps, num_stages=2)


def strip_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, stripe_width: int,
                           scale: float) -> torch.Tensor:
    """Launcher: q, k, v ``[B, H, W, heads, D]`` (heads even, any strides) -> ``[B, H, W, heads, D]`` contiguous.

    Heads ``[0, heads/2)`` attend inside vertical stripes (H rows x `stripe_width` columns), heads
    ``[heads/2, heads)`` inside horizontal ones (`stripe_width` rows x W columns); see `naive.py`.
    """
    if q.dim() != 5 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"strip_attention_triton: q, k, v must share one [B, H, W, heads, D] shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, h, w, heads, d = q.shape
    if heads % 2 or stripe_width < 1:
        raise ValueError(f"strip_attention_triton: need an even number of heads and stripe_width >= 1, got "
                         f"{heads} heads, stripe_width {stripe_width}")
    if q.dtype not in _SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"strip_attention_triton: q, k, v must share one dtype among float32, float16, bfloat16, "
                        f"got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"strip_attention_triton: q, k, v must be on one device, got {q.device}, {k.device}, "
                         f"{v.device}")
    if d > _MAX_HEAD_DIM:
        raise ValueError(f"strip_attention_triton: head dim {d} > {_MAX_HEAD_DIM} is not supported; use "
                         f"backend='torch'")
    interpreted = interpreting(_strip_attention_fwd_kernel)
    if not q.is_cuda and not interpreted:
        raise RuntimeError(f"strip_attention_triton: tensors on {q.device} need Triton's interpreter: set "
                           f"TRITON_INTERPRET=1 before triton is imported, or use backend='torch'")
    out = torch.empty((b, h, w, heads, d), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out

    sw_v, sw_h = min(stripe_width, w), min(stripe_width, h)
    n_stripes_v, n_stripes_h = -(-w // sw_v), -(-h // sw_h)
    max_seq_len = max(h * sw_v, w * sw_h)
    n_stripes_max = max(n_stripes_v, n_stripes_h)
    block_d = max(16, triton.next_power_of_2(d))
    n_sms = None if interpreted else num_sms(q.device)
    n_stripe_programs = b * (heads // 2) * (n_stripes_v + n_stripes_h)
    cfg = _configs(max_seq_len, block_d, n_stripe_programs, n_sms)
    n_m_blocks = triton.cdiv(max_seq_len, cfg.block_m)
    grid = (n_m_blocks * n_stripes_max * b * heads,)
    # fp32 inputs follow torch's matmul precision setting (the reference runs matmuls in fp32 unless TF32 is on;
    # "tf32", Triton's default, does not affect 16-bit operands). fp16/bf16 stay in their dtype for tl.dot (fp32
    # accumulation), except bf16 under the interpreter, whose bf16 arithmetic is wrong.
    input_precision = "ieee" if q.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32 else "tf32"
    upcast = interpreted and q.dtype == torch.bfloat16
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        _strip_attention_fwd_kernel[grid](
            q, k, v, out,
            *q.stride(), *k.stride(), *v.stride(), *out.stride()[:4],
            h, w, heads, stripe_width, n_m_blocks, n_stripes_max, scale * _LOG2_E,
            HEAD_DIM=d, BLOCK_D=block_d, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
            UPCAST=upcast, INPUT_PRECISION=input_precision,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
    return out
