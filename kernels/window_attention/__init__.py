"""Swin window attention: public op (dispatch between the Triton kernel and the reference)."""
from __future__ import annotations

import torch

from kernels._dispatch import fused_kernel, resolve_backend
from kernels.window_attention.naive import relative_bias, window_attention_reference

__all__ = ["window_attention", "relative_bias"]


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_pos_table: torch.Tensor | None, window_size: int,
           shift_size: int) -> None:
    if q.dim() != 5 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"window_attention: q, k, v must share one [B, H, W, heads, D] shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if window_size < 1 or not 0 <= shift_size < window_size:
        raise ValueError(f"window_attention: need window_size >= 1 and 0 <= shift_size < window_size, got "
                         f"{window_size}, {shift_size}")
    want = (q.shape[3], 2 * window_size - 1, 2 * window_size - 1)
    if rel_pos_table is not None and tuple(rel_pos_table.shape) != want:
        raise ValueError(f"window_attention: rel_pos_table must be {list(want)}, got {list(rel_pos_table.shape)}")


@fused_kernel("window_attention")
def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_pos_table: torch.Tensor | None,
                     window_size: int, shift_size: int, scale: float, backend: str | None = None) -> torch.Tensor:
    """Multi-head attention inside M x M windows of a feature map, Swin-style.

    Args:
        q, k, v: ``[B, H, W, heads, D]`` (any strides, e.g. views of one qkv projection).
        rel_pos_table: ``[heads, 2M-1, 2M-1]`` relative position bias, or None for none.
        window_size: M; H and W need not be multiples of M (pad tokens are masked).
        shift_size: cyclic shift in tokens, ``0 <= shift_size < M`` (0: no shift).
        scale: multiplier of q k^T (usually D ** -0.5).
        backend: ``"triton"``, ``"torch"`` or ``"auto"``/None (see `kernels._dispatch`).
    Returns:
        ``[B, H, W, heads, D]`` in q's dtype.
    """
    _check(q, k, v, rel_pos_table, window_size, shift_size)
    tensors = (q, k, v) if rel_pos_table is None else (q, k, v, rel_pos_table)
    if resolve_backend("window_attention", tensors, backend) == "triton":
        from kernels.window_attention.triton_kernel import window_attention_triton
        return window_attention_triton(q, k, v, rel_pos_table, window_size, shift_size, scale)
    return window_attention_reference(q, k, v, rel_pos_table, window_size, shift_size, scale)
