"""L2ViT linear attention: public op (dispatch between the Triton kernel and the reference)."""
from __future__ import annotations

import torch

from kernels._dispatch import fused_kernel, resolve_backend
from kernels.linear_attention.naive import linear_attention_reference

__all__ = ["linear_attention"]


@fused_kernel("linear_attention")
def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor,
                     floor: float = 100.0, backend: str | None = None) -> torch.Tensor:
    """Linear attention with a ReLU feature map over all N tokens (L2ViT's LGA, without its projections).

    Args:
        q, k, v: ``[B, N, heads, D]`` (any strides).
        temperature: ``[heads]``, multiplies each head's K^T V state (L2ViT learns it, init D ** -0.5).
        floor: lower bound of the normaliser ``q . sum_n k`` (L2ViT uses 100).
        backend: ``"triton"``, ``"torch"`` or ``"auto"``/None (see `kernels._dispatch`).
    Returns:
        ``[B, N, heads, D]`` in q's dtype; accumulated in fp32.
    """
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"linear_attention: q, k, v must share one [B, N, heads, D] shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if tuple(temperature.shape) != (q.shape[2],):
        raise ValueError(f"linear_attention: temperature must be [{q.shape[2]}], got {list(temperature.shape)}")
    if not floor > 0:
        raise ValueError(f"linear_attention: floor must be > 0, got {floor}")
    if resolve_backend("linear_attention", (q, k, v, temperature), backend) == "triton":
        from kernels.linear_attention.triton_kernel import linear_attention_triton
        return linear_attention_triton(q, k, v, temperature, floor)
    return linear_attention_reference(q, k, v, temperature, floor)
