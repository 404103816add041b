"""QnA aggregation (learned queries over overlapping k x k windows) as two depthwise convolutions.

For query q, head h, output position i (stride s) and window offset o:
``out_i = sum_q sum_o w_{q,h,o} softmax_o(logit_{q,h}(s*i + o) + b_{q,h,o}) v_h(s*i + o)``,
computed as ``conv(exp(logit) * v, exp(b) * w) / conv(exp(logit), exp(b))``, zero padding outside the map
(so outside positions drop out of both sums), then summed over the queries. A max is subtracted from the
logits (per batch, query and head) and from the bias before exp; it cancels in the ratio. Since that max is
global, not per window, a window whose logits all lie more than ~87 below it underflows to 0 (finite); QnA's
L2-normalised queries keep logits within |k| / sqrt(D), far from that.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def qna_attention_reference(logits: torch.Tensor, v: torch.Tensor, pos_bias: torch.Tensor, attn_scale: torch.Tensor,
                            stride: int) -> torch.Tensor:
    """logits ``[B, H, W, Q, heads]``, v ``[B, H, W, heads, D]``, pos_bias and attn_scale ``[Q, heads, k, k]``
    -> ``[B, H', W', heads*D]`` with H' = ceil(H / stride)."""
    b, h, w, n_queries, heads = logits.shape
    d = v.shape[-1]
    ksize = pos_bias.shape[-1]
    padding = ksize // 2
    # exp with the max over each (batch, query, head) subtracted; [B, Q*heads, H, W], channels-last memory.
    logits = logits.float().permute(0, 3, 4, 1, 2)
    weights = torch.exp(logits - logits.amax(dim=(3, 4), keepdim=True))
    bias = torch.exp(pos_bias.float() - pos_bias.float().amax(dim=(2, 3), keepdim=True))  # [Q, heads, k, k]
    v_nchw = v.float().permute(0, 3, 4, 1, 2)  # [B, heads, D, H, W]
    weighted_v = (weights[:, :, :, None] * v_nchw[:, None]).reshape(b, n_queries * heads * d, h, w)
    num_kernel = (bias * attn_scale.float()).repeat_interleave(d, dim=1).reshape(-1, 1, ksize, ksize)
    numerator = F.conv2d(weighted_v, num_kernel, stride=stride, padding=padding, groups=n_queries * heads * d)
    denominator = F.conv2d(weights.reshape(b, n_queries * heads, h, w), bias.reshape(-1, 1, ksize, ksize),
                           stride=stride, padding=padding, groups=n_queries * heads)
    ho, wo = numerator.shape[-2:]
    out = numerator.view(b, n_queries, heads, d, ho, wo) / denominator.view(b, n_queries, heads, 1, ho, wo).clamp_min(
        torch.finfo(torch.float32).tiny)
    return out.sum(dim=1).reshape(b, heads * d, ho, wo).permute(0, 2, 3, 1).to(v.dtype)
