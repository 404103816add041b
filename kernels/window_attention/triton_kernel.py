"""Fused Swin window attention, forward only: kernel -> launcher (semantics of `naive.window_attention_reference`).

One program per (batch, window, head). Windows are read straight from the ``[B, H, W, heads, D]`` layout (no
partition / roll / pad copies): token ``t`` of window ``(wh, ww)`` sits at rolled, padded position
``(wh*M + t // M, ww*M + t % M)``, whose source position is ``((row + shift) % Hp, (col + shift) % Wp)``; a source
outside ``H x W`` is a pad token (masked as a key, not stored as a query). The whole window's K and V stay on chip;
queries go through in chunks of ``BLOCK_M`` rows, each with one ``tl.dot`` for Q K^T and one for P V.

Numerics: logits, softmax and both accumulations in fp32. fp16/bf16 inputs feed the tensor cores in their own
dtype (products are exact in fp32), and P is rounded to that dtype for the P V product, as flash attention does.
fp32 inputs use IEEE fp32 dots, or TF32 when ``torch.backends.cuda.matmul.allow_tf32`` is set, as torch's matmul
in the reference would.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["window_attention_triton"]

_MASKED = tl.constexpr(-1e9)  # the reference's fill value (finite: fully masked pad-query rows give no NaN)
_LOG2E = tl.constexpr(1.4426950408889634)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_TOKENS = 256  # M*M padded to a power of two; M <= 16
_MAX_HEAD_DIM = 128


@triton.jit
def _window_attention_fwd_kernel(
    q_ptr, k_ptr, v_ptr, table_ptr, out_ptr,
    stride_qb, stride_qh, stride_qw, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kw, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vw, stride_vn, stride_vd,
    stride_tn, stride_ty, stride_tx,
    stride_ob, stride_oh, stride_ow, stride_on,
    H, W, HP, WP, NUM_HEADS, N_WIN_W, N_WIN, qk_scale_log2,
    M: tl.constexpr, SHIFT: tl.constexpr, D: tl.constexpr, HAS_BIAS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # Heads vary fastest: neighbouring programs read neighbouring bytes of the same tokens.
    pid = tl.program_id(0)
    head = pid % NUM_HEADS
    win = (pid // NUM_HEADS) % N_WIN
    batch = (pid // NUM_HEADS // N_WIN).to(tl.int64)
    win_row0 = (win // N_WIN_W) * M
    win_col0 = (win % N_WIN_W) * M

    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D

    # Keys / values: every token of the window, on the rolled, padded grid.
    offs_n = tl.arange(0, BLOCK_N)
    n_y = offs_n // M
    n_x = offs_n % M
    n_row = win_row0 + n_y
    n_col = win_col0 + n_x
    n_src_row = (n_row + SHIFT) % HP
    n_src_col = (n_col + SHIFT) % WP
    n_ok = (offs_n < M * M) & (n_src_row < H) & (n_src_col < W)
    n_region = ((n_row >= HP - M).to(tl.int32) + (n_row >= HP - SHIFT).to(tl.int32)) * 3 \
        + (n_col >= WP - M).to(tl.int32) + (n_col >= WP - SHIFT).to(tl.int32)

    kv_mask = n_ok[:, None] & d_ok[None, :]
    k_ptrs = (k_ptr + batch * stride_kb + head * stride_kn
              + n_src_row[:, None] * stride_kh + n_src_col[:, None] * stride_kw + offs_d[None, :] * stride_kd)
    v_ptrs = (v_ptr + batch * stride_vb + head * stride_vn
              + n_src_row[:, None] * stride_vh + n_src_col[:, None] * stride_vw + offs_d[None, :] * stride_vd)
    k = tl.load(k_ptrs, mask=kv_mask, other=0.0)  # [BLOCK_N, BLOCK_D], input dtype
    v = tl.load(v_ptrs, mask=kv_mask, other=0.0)

    for m_start in tl.static_range(0, M * M, BLOCK_M):  # skips chunks with no token of the window
        offs_m = m_start + tl.arange(0, BLOCK_M)
        m_y = offs_m // M
        m_x = offs_m % M
        m_row = win_row0 + m_y
        m_col = win_col0 + m_x
        m_src_row = (m_row + SHIFT) % HP
        m_src_col = (m_col + SHIFT) % WP
        m_ok = (offs_m < M * M) & (m_src_row < H) & (m_src_col < W)
        m_region = ((m_row >= HP - M).to(tl.int32) + (m_row >= HP - SHIFT).to(tl.int32)) * 3 \
            + (m_col >= WP - M).to(tl.int32) + (m_col >= WP - SHIFT).to(tl.int32)

        q_ptrs = (q_ptr + batch * stride_qb + head * stride_qn
                  + m_src_row[:, None] * stride_qh + m_src_col[:, None] * stride_qw + offs_d[None, :] * stride_qd)
        q = tl.load(q_ptrs, mask=m_ok[:, None] & d_ok[None, :], other=0.0)

        # Logits in the log2 domain: (q k^T * scale + bias) * log2(e).
        logits = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION) * qk_scale_log2  # [BLOCK_M, BLOCK_N] fp32
        if HAS_BIAS:
            dy = m_y[:, None] - n_y[None, :] + (M - 1)
            dx = m_x[:, None] - n_x[None, :] + (M - 1)
            in_window = (offs_m[:, None] < M * M) & (offs_n[None, :] < M * M)
            bias = tl.load(table_ptr + head * stride_tn + dy * stride_ty + dx * stride_tx, mask=in_window, other=0.0)
            logits += bias.to(tl.float32) * _LOG2E
        keep = n_ok[None, :] & (m_region[:, None] == n_region[None, :])
        logits = tl.where(keep, logits, _MASKED)

        row_max = tl.max(logits, axis=1)
        p = tl.exp2(logits - row_max[:, None])
        row_sum = tl.sum(p, axis=1)
        acc = tl.dot(p.to(v.dtype), v, input_precision=INPUT_PRECISION)  # [BLOCK_M, BLOCK_D] fp32
        acc = acc / row_sum[:, None]

        out_ptrs = (out_ptr + batch * stride_ob + head * stride_on
                    + m_src_row[:, None] * stride_oh + m_src_col[:, None] * stride_ow + offs_d[None, :])
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])


def _configs(tokens: int, head_dim: int) -> dict[str, int]:
    """Launch meta for a window of `tokens` (= M*M) tokens of head dim `head_dim`.

    Keys pad to a power of two (>= 16, as `tl.dot` needs); queries go in chunks of at most 64 rows so that the
    fp32 logit tile ``[BLOCK_M, BLOCK_N]`` stays within registers even for M = 14 (256 keys).
    """
    block_n = max(16, triton.next_power_of_2(tokens))
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_m = min(block_n, 64)
    num_warps = 4 if block_m * block_n <= 64 * 128 else 8
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps, num_stages=1)


def _input_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def window_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_pos_table: torch.Tensor | None,
                            window_size: int, shift_size: int, scale: float) -> torch.Tensor:
    """Launcher: q, k, v ``[B, H, W, heads, D]`` (any strides) -> contiguous ``[B, H, W, heads, D]`` in q's dtype.

    rel_pos_table is ``[heads, 2M-1, 2M-1]`` or None; see `naive.window_attention_reference` for the semantics.
    """
    if q.dim() != 5 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"window_attention_triton: q, k, v must share one [B, H, W, heads, D] shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"window_attention_triton: q, k, v must share one of {_DTYPES}, got "
                        f"{q.dtype}, {k.dtype}, {v.dtype}")
    b, h, w, heads, d = q.shape
    m, s = int(window_size), int(shift_size)
    if m < 1 or not 0 <= s < m:
        raise ValueError(f"window_attention_triton: need window_size >= 1 and 0 <= shift_size < window_size, "
                         f"got {window_size}, {shift_size}")
    if m * m > _MAX_TOKENS or d > _MAX_HEAD_DIM:
        raise ValueError(f"window_attention_triton: supports window_size**2 <= {_MAX_TOKENS} and head dim <= "
                         f"{_MAX_HEAD_DIM}, got window_size={m}, head dim={d}; use backend='torch'")
    tensors = (q, k, v) if rel_pos_table is None else (q, k, v, rel_pos_table)
    if any(t.device != q.device for t in tensors):
        raise ValueError(f"window_attention_triton: all tensors must be on one device, got "
                         f"{[str(t.device) for t in tensors]}")
    if rel_pos_table is not None:
        want = (heads, 2 * m - 1, 2 * m - 1)
        if tuple(rel_pos_table.shape) != want:
            raise ValueError(f"window_attention_triton: rel_pos_table must be {list(want)}, got "
                             f"{list(rel_pos_table.shape)}")
        if not rel_pos_table.is_floating_point():
            raise TypeError(f"window_attention_triton: rel_pos_table must be floating point, got "
                            f"{rel_pos_table.dtype}")

    out = torch.empty((b, h, w, heads, d), device=q.device, dtype=q.dtype)
    if out.numel() == 0:
        return out
    hp, wp = -(-h // m) * m, -(-w // m) * m
    n_win_w = wp // m
    n_win = (hp // m) * n_win_w
    table = rel_pos_table if rel_pos_table is not None else q  # dummy pointer when HAS_BIAS is False
    table_strides = rel_pos_table.stride() if rel_pos_table is not None else (0, 0, 0)
    meta = _configs(m * m, d)
    grid = (b * n_win * heads,)
    _window_attention_fwd_kernel[grid](
        q, k, v, table, out,
        *q.stride(), *k.stride(), *v.stride(), *table_strides, *out.stride()[:4],
        h, w, hp, wp, heads, n_win_w, n_win, float(scale) * _LOG2E.value,
        M=m, SHIFT=s, D=d, HAS_BIAS=rel_pos_table is not None, INPUT_PRECISION=_input_precision(q.dtype),
        **meta,
    )
    return out
