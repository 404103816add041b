"""QnA learned-query aggregation: PyTorch/cuDNN depthwise convolutions (no Triton kernel; see naive.py)."""
from __future__ import annotations

import torch

from kernels.qna.naive import qna_attention_reference

__all__ = ["qna_attention"]


def qna_attention(logits: torch.Tensor, v: torch.Tensor, pos_bias: torch.Tensor, attn_scale: torch.Tensor,
                  stride: int) -> torch.Tensor:
    """Aggregate values over overlapping k x k windows with learned queries (QnA, Arar et al. 2022).

    Args:
        logits: ``[B, H, W, Q, heads]`` query-key logits of every token for each of Q learned queries.
        v: ``[B, H, W, heads, D]`` values.
        pos_bias: ``[Q, heads, k, k]`` relative position bias of each window offset (k odd).
        attn_scale: ``[Q, heads, k, k]`` per-offset weights of the numerator (QnA's ``attn_scale_weights``).
        stride: 1, or 2 to downsample.
    Returns:
        ``[B, ceil(H/stride), ceil(W/stride), heads*D]`` in v's dtype (per-query outputs summed).
    """
    if logits.dim() != 5 or v.dim() != 5 or logits.shape[:3] != v.shape[:3] or logits.shape[4] != v.shape[3]:
        raise ValueError(f"qna_attention: need logits [B, H, W, Q, heads] and v [B, H, W, heads, D], got "
                         f"{tuple(logits.shape)}, {tuple(v.shape)}")
    ksize = pos_bias.shape[-1]
    want = (logits.shape[3], logits.shape[4], ksize, ksize)
    if ksize % 2 == 0 or tuple(pos_bias.shape) != want or tuple(attn_scale.shape) != want:
        raise ValueError(f"qna_attention: pos_bias and attn_scale must be [Q, heads, k, k] with k odd = {list(want)},"
                         f" got {list(pos_bias.shape)}, {list(attn_scale.shape)}")
    if stride not in (1, 2):
        raise ValueError(f"qna_attention: stride must be 1 or 2, got {stride}")
    return qna_attention_reference(logits, v, pos_bias, attn_scale, stride)
