"""CSWin stripe attention: public op (dispatch between the Triton kernel and the reference)."""
from __future__ import annotations

import torch

from kernels._dispatch import fused_kernel, resolve_backend
from kernels.strip_attention.naive import strip_attention_reference

__all__ = ["strip_attention"]


@fused_kernel("strip_attention")
def strip_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, stripe_width: int, scale: float,
                    backend: str | None = None) -> torch.Tensor:
    """Cross-shaped window attention (CSWin): half the heads in vertical stripes, half in horizontal ones.

    Args:
        q, k, v: ``[B, H, W, heads, D]`` with an even number of heads (any strides).
        stripe_width: sw, the stripes' width in tokens; the last stripe is narrower when sw does not divide the map.
        scale: multiplier of q k^T (usually D ** -0.5).
        backend: ``"triton"``, ``"torch"`` or ``"auto"``/None (see `kernels._dispatch`).
    Returns:
        ``[B, H, W, heads, D]`` in q's dtype.
    """
    if q.dim() != 5 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"strip_attention: q, k, v must share one [B, H, W, heads, D] shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[3] % 2 or stripe_width < 1:
        raise ValueError(f"strip_attention: need an even number of heads and stripe_width >= 1, got "
                         f"{q.shape[3]} heads, stripe_width {stripe_width}")
    if resolve_backend("strip_attention", (q, k, v), backend) == "triton":
        from kernels.strip_attention.triton_kernel import strip_attention_triton
        return strip_attention_triton(q, k, v, stripe_width, scale)
    return strip_attention_reference(q, k, v, stripe_width, scale)
