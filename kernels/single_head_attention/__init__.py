"""SHViT single-head attention: public op (dispatch between the Triton kernel and the reference)."""
from __future__ import annotations

import torch

from kernels._dispatch import fused_kernel, resolve_backend
from kernels.single_head_attention.naive import single_head_attention_reference

__all__ = ["single_head_attention"]


@fused_kernel("single_head_attention")
def single_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                          backend: str | None = None) -> torch.Tensor:
    """One softmax head over all N tokens, with a q/k dim different from the v dim (SHViT: 16 vs pdim).

    Args:
        q, k: ``[B, N, Dqk]``; v: ``[B, N, Dv]`` (any strides, e.g. transposed views of a 1x1-conv output).
        scale: multiplier of q k^T (SHViT: Dqk ** -0.5).
        backend: ``"triton"``, ``"torch"`` or ``"auto"``/None (see `kernels._dispatch`).
    Returns:
        ``[B, N, Dv]`` in q's dtype.
    """
    if q.dim() != 3 or q.shape != k.shape or v.dim() != 3 or v.shape[:2] != q.shape[:2]:
        raise ValueError(f"single_head_attention: need q, k [B, N, Dqk] and v [B, N, Dv], got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if resolve_backend("single_head_attention", (q, k, v), backend) == "triton":
        from kernels.single_head_attention.triton_kernel import single_head_attention_triton
        return single_head_attention_triton(q, k, v, scale)
    return single_head_attention_reference(q, k, v, scale)
