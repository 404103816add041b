"""SHViT single-head attention: Triton forward kernel (flash-style online softmax) and its launcher.

One program computes a ``[BLOCK_M, BLOCK_DV]`` tile of the output: rows ``BLOCK_M`` queries of one batch element,
columns one chunk of the v channels. It walks over the keys in blocks of ``BLOCK_N`` and keeps a running row
maximum and row sum in fp32, so the ``N x N`` weights never reach memory and no ``exp`` overflows.

Layouts: q, k, v may have any strides. In the model they are transposed views of a ``[B, C, H, W]`` 1x1-conv output
(token stride 1, channel stride N); the tiles are loaded straight from those strides (k directly as ``k^T``), and
Triton specialises strides equal to 1, so both that layout and the contiguous one load coalesced.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels._triton import interpreting, num_sms

__all__ = ["single_head_attention_triton"]

_LOG2E = math.log2(math.e)
_MAX_D_QK = 256          # q/k tiles are [BLOCK_M, Dqk] and [Dqk, BLOCK_N] in registers
_MAX_BLOCK_DV = 128      # wider v is split over the grid
_MAX_GRID_Y = 65535      # CUDA limit of grid axis 1 (batch); larger batches are launched in slices
_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_HALF_DTYPES = (torch.float16, torch.bfloat16)


@triton.jit
def _single_head_attention_fwd_kernel(
    Q, K, V, O,
    qk_scale,                                   # scale * log2(e): the kernel uses exp2
    N, D_QK, D_V,
    stride_qb, stride_qn, stride_qd,
    stride_kb, stride_kn, stride_kd,
    stride_vb, stride_vn, stride_vd,
    stride_ob, stride_on, stride_od,
    NUM_M_BLOCKS,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    QK_DOT_FP32: tl.constexpr, PV_DOT_FP32: tl.constexpr,
    QK_PRECISION: tl.constexpr, PV_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_m = pid % NUM_M_BLOCKS
    pid_dv = pid // NUM_M_BLOCKS
    pid_b = tl.program_id(1).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_dqk = tl.arange(0, BLOCK_DQK)
    offs_dv = pid_dv * BLOCK_DV + tl.arange(0, BLOCK_DV)
    mask_m = offs_m < N
    mask_dqk = offs_dqk < D_QK
    mask_dv = offs_dv < D_V

    q_ptrs = Q + pid_b * stride_qb + offs_m[:, None] * stride_qn + offs_dqk[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=mask_m[:, None] & mask_dqk[None, :], other=0.0)
    if QK_DOT_FP32:
        q = q.to(tl.float32)
    # k is loaded as k^T [BLOCK_DQK, BLOCK_N]; v as [BLOCK_N, BLOCK_DV].
    kt_ptrs = K + pid_b * stride_kb + offs_dqk[:, None] * stride_kd + offs_n[None, :] * stride_kn
    v_ptrs = V + pid_b * stride_vb + offs_n[:, None] * stride_vn + offs_dv[None, :] * stride_vd

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)    # running max of the log2-logits
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)                  # running sum of exp2(logit - m_i)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    for start_n in range(0, N, BLOCK_N):
        mask_n = (start_n + offs_n) < N
        kt = tl.load(kt_ptrs, mask=mask_dqk[:, None] & mask_n[None, :], other=0.0)
        if QK_DOT_FP32:
            kt = kt.to(tl.float32)
        s = tl.dot(q, kt, input_precision=QK_PRECISION) * qk_scale
        s = tl.where(mask_n[None, :], s, float("-inf"))
        # The first block always holds key 0, so m_new is finite from the first iteration on.
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)

        v = tl.load(v_ptrs, mask=mask_n[:, None] & mask_dv[None, :], other=0.0)
        if PV_DOT_FP32:
            v = v.to(tl.float32)
        else:
            p = p.to(v.dtype)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PV_PRECISION)
        m_i = m_new
        kt_ptrs += BLOCK_N * stride_kn
        v_ptrs += BLOCK_N * stride_vn

    acc = acc / l_i[:, None]
    o_ptrs = O + pid_b * stride_ob + offs_m[:, None] * stride_on + offs_dv[None, :] * stride_od
    tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=mask_m[:, None] & mask_dv[None, :])


class _Config(NamedTuple):
    """Launch configuration of `_single_head_attention_fwd_kernel` (block sizes are powers of two >= 16)."""

    BLOCK_M: int
    BLOCK_N: int
    BLOCK_DV: int
    num_warps: int
    num_stages: int


# (half-precision dots?, BLOCK_M, BLOCK_DV) -> (BLOCK_N, num_warps). Picked from `ptxas -v` for sm_90a over
# BLOCK_N in {32, 64} x num_warps in {2, 4, 8} at Dqk 16 and 32, both layouts: the largest BLOCK_N, then the fewest
# warps, that compile without register spills (one 8-byte spill is left: fp32, 64, 32, contiguous, Dqk 16).
# Missing keys spill at any setting: BLOCK_M=128 with BLOCK_DV=128, and fp32 with BLOCK_M=128 at Dqk=32.
# fp32 operands take the FMA path of tl.dot (IEEE), which needs more registers.
_TILES: dict[tuple[bool, int, int], tuple[int, int]] = {
    (True, 16, 32): (64, 4), (True, 16, 64): (64, 4), (True, 16, 128): (32, 4),
    (True, 32, 32): (64, 4), (True, 32, 64): (64, 8), (True, 32, 128): (64, 8),
    (True, 64, 32): (64, 4), (True, 64, 64): (64, 8), (True, 64, 128): (64, 8),
    (True, 128, 32): (64, 8), (True, 128, 64): (64, 8),
    (False, 16, 32): (32, 4), (False, 16, 64): (32, 4), (False, 16, 128): (32, 4),
    (False, 32, 32): (32, 4), (False, 32, 64): (32, 8), (False, 32, 128): (32, 8),
    (False, 64, 32): (32, 8), (False, 64, 64): (32, 8), (False, 64, 128): (32, 8),
}


def _configs(batch: int, n_tokens: int, d_v: int, half_dots: bool, device: torch.device) -> _Config:
    """Block sizes and warps for one call.

    SHViT's maps are small (14x14 and 7x7 at 224 px, often batch 1), so the grid is what limits speed: take the
    largest ``BLOCK_M`` that still gives about one program per SM, down to 16; when even that leaves SMs idle,
    split the v channels over the grid too (each chunk recomputes the cheap ``Dqk``-wide logits). ``BLOCK_N`` and
    the warps then come from `_TILES`.
    """
    target_programs = num_sms(device)
    block_dv = min(max(16, triton.next_power_of_2(d_v)), _MAX_BLOCK_DV)
    block_m = 16
    for candidate in (128, 64, 32):
        if (half_dots, candidate, max(32, block_dv)) not in _TILES:    # would spill registers
            continue
        if batch * triton.cdiv(n_tokens, candidate) * triton.cdiv(d_v, block_dv) >= target_programs:
            block_m = candidate
            break
    if block_m == 16:
        while block_dv > 32 and batch * triton.cdiv(n_tokens, 16) * triton.cdiv(d_v, block_dv) < target_programs:
            block_dv //= 2
    block_n, num_warps = _TILES[(half_dots, block_m, max(32, block_dv))]
    block_n = min(block_n, max(16, triton.next_power_of_2(n_tokens)))
    return _Config(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_DV=block_dv, num_warps=num_warps, num_stages=2)


def _fp32_input_precision() -> str:
    """Follow PyTorch's fp32 matmul setting, as the reference's fp32 matmuls do: IEEE fp32 unless TF32 is allowed."""
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def single_head_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                                 *, config: _Config | None = None) -> torch.Tensor:
    """``softmax(q k^T * scale) v`` with one online-softmax pass, forward only.

    Args:
        q, k: ``[B, N, Dqk]``; v: ``[B, N, Dv]``; any strides, fp16/bf16/fp32 (fp64 is computed in fp32,
            as the reference does).
        scale: multiplier of q k^T.
        config: override of `_configs` (tests, benchmarks).
    Returns:
        ``[B, N, Dv]`` contiguous, in q's dtype. Accumulation is fp32; fp16/bf16 q, k (and v) go to ``tl.dot``
        in their own dtype (the softmax weights are rounded to v's dtype for the second product).
    """
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3 or q.shape != k.shape or v.shape[:2] != q.shape[:2]:
        raise ValueError(f"single_head_attention_triton: need q, k [B, N, Dqk] and v [B, N, Dv], got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"single_head_attention_triton: q, k, v on different devices "
                         f"({q.device}, {k.device}, {v.device})")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dtype not in _SUPPORTED_DTYPES:
            raise TypeError(f"single_head_attention_triton: {name} is {t.dtype}; expected one of "
                            f"{', '.join(str(d) for d in _SUPPORTED_DTYPES)}")
    batch, n_tokens, d_qk = q.shape
    d_v = v.shape[2]
    if d_qk > _MAX_D_QK:
        raise ValueError(f"single_head_attention_triton: Dqk={d_qk} is above {_MAX_D_QK}; use backend='torch'")

    out = torch.empty((batch, n_tokens, d_v), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out

    # bf16 arithmetic is wrong under the interpreter, so there it is computed in fp32.
    low_precision = _HALF_DTYPES if not interpreting(_single_head_attention_fwd_kernel) else (torch.float16,)
    qk_dot_fp32 = not (q.dtype == k.dtype and q.dtype in low_precision)
    pv_dot_fp32 = v.dtype not in low_precision
    half_dots = not (qk_dot_fp32 or pv_dot_fp32)
    cfg = config if config is not None else _configs(batch, n_tokens, d_v, half_dots, q.device)
    # input_precision only matters for fp32 operands; half operands always run on the tensor cores.
    fp32_precision = _fp32_input_precision()
    num_m_blocks = triton.cdiv(n_tokens, cfg.BLOCK_M)
    grid_x = num_m_blocks * triton.cdiv(d_v, cfg.BLOCK_DV)
    for b0 in range(0, batch, _MAX_GRID_Y):
        b1 = min(batch, b0 + _MAX_GRID_Y)
        q_b, k_b, v_b, o_b = q[b0:b1], k[b0:b1], v[b0:b1], out[b0:b1]
        _single_head_attention_fwd_kernel[(grid_x, b1 - b0)](
            q_b, k_b, v_b, o_b,
            float(scale) * _LOG2E,
            n_tokens, d_qk, d_v,
            *q_b.stride(), *k_b.stride(), *v_b.stride(), *o_b.stride(),
            num_m_blocks,
            BLOCK_M=cfg.BLOCK_M, BLOCK_N=cfg.BLOCK_N,
            BLOCK_DQK=max(16, triton.next_power_of_2(d_qk)), BLOCK_DV=cfg.BLOCK_DV,
            QK_DOT_FP32=qk_dot_fp32, PV_DOT_FP32=pv_dot_fp32,
            QK_PRECISION=fp32_precision if qk_dot_fp32 else "tf32",
            PV_PRECISION=fp32_precision if pv_dot_fp32 else "tf32",
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
    return out
