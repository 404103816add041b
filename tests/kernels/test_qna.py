"""QnA aggregation as two depthwise convolutions, against an explicit per-window softmax."""
from __future__ import annotations

import pytest
import torch

from kernels import qna_attention


def _explicit(logits, v, pos_bias, attn_scale, stride):
    """out[i] = sum_q sum_o w[q,o] softmax_o(logit(s*i+o) + b[q,o]) v(s*i+o), over in-map offsets only."""
    b, h, w, n_q, heads = logits.shape
    k = pos_bias.shape[-1]
    r = k // 2
    ho, wo = -(-h // stride), -(-w // stride)
    out = torch.zeros(b, ho, wo, heads, v.shape[-1], dtype=torch.float64)
    for i in range(ho):
        for j in range(wo):
            ci, cj = i * stride, j * stride
            rows = [y for y in range(ci - r, ci + r + 1) if 0 <= y < h]
            cols = [x for x in range(cj - r, cj + r + 1) if 0 <= x < w]
            for q in range(n_q):
                scores = torch.stack([logits[:, y, x, q].double() + pos_bias[q, :, y - ci + r, x - cj + r].double()
                                      for y in rows for x in cols], dim=-1)  # [B, heads, window]
                weights = torch.softmax(scores, dim=-1) * torch.stack(
                    [attn_scale[q, :, y - ci + r, x - cj + r].double() for y in rows for x in cols], dim=-1)
                values = torch.stack([v[:, y, x].double() for y in rows for x in cols], dim=-2)  # [B, heads, win, D]
                out[:, i, j] += (weights[..., None] * values).sum(dim=-2)
    return out.reshape(b, ho, wo, -1)


@pytest.mark.parametrize("h, w, n_q, heads, d, k, stride", [
    (7, 7, 2, 3, 5, 3, 1), (9, 6, 1, 2, 4, 5, 2), (5, 8, 2, 1, 3, 3, 2), (4, 4, 1, 2, 2, 7, 1),
], ids=["7x7-q2-k3-s1", "9x6-q1-k5-s2", "5x8-q2-k3-s2", "4x4-k7-larger-than-map"])
def test_matches_explicit_window_softmax(h, w, n_q, heads, d, k, stride) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, h, w, n_q, heads) * 3
    v = torch.randn(2, h, w, heads, d)
    pos_bias, attn_scale = torch.randn(n_q, heads, k, k), torch.randn(n_q, heads, k, k)
    out = qna_attention(logits, v, pos_bias, attn_scale, stride)
    assert out.shape == (2, -(-h // stride), -(-w // stride), heads * d)
    torch.testing.assert_close(out.double(), _explicit(logits, v, pos_bias, attn_scale, stride), atol=1e-5, rtol=1e-4)


def test_large_logits_stay_finite() -> None:
    logits = torch.full((1, 5, 5, 1, 2), 200.0)
    logits[0, 2, 2] = 300.0  # exp(300) overflows fp32 without the max subtraction
    out = qna_attention(logits, torch.randn(1, 5, 5, 2, 4), torch.zeros(1, 2, 3, 3), torch.ones(1, 2, 3, 3), 1)
    assert torch.isfinite(out).all()


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="k odd"):
        qna_attention(torch.randn(1, 4, 4, 1, 2), torch.randn(1, 4, 4, 2, 3), torch.zeros(1, 2, 2, 2),
                      torch.zeros(1, 2, 2, 2), 1)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        qna_attention(torch.randn(1, 4, 4, 1, 2), torch.randn(1, 4, 4, 2, 3), torch.zeros(1, 2, 3, 3),
                      torch.zeros(1, 2, 3, 3), 3)
