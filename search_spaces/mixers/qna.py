"""QnA (Arar et al., 2022): learned queries shared by overlapping k x k windows, and its block. NHWC in/out."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from search_spaces.mixers.common import DropPath, LayerNorm, Mlp, nchw, nhwc, trunc_normal_
from search_spaces.spec import QnAMixer


class QnAttention(nn.Module):
    """QnA layer (FusedKQnA): logits = x . (Wk^T q_hat), q_hat = q / |q| / sqrt(D) per head and query;
    softmax over each k x k window with a relative position bias; values weighted per offset; queries summed.

    Args:
        in_width: input channels; out_width: channels of values and output (2x in_width when downsampling);
        stride: 1, or 2 to downsample (output ``ceil(H/2) x ceil(W/2)``).
    """

    def __init__(self, in_width: int, out_width: int, num_heads: int, kernel_size: int, num_queries: int,
                 stride: int = 1) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.stride = num_heads, out_width // num_heads, stride
        self.query = nn.Parameter(torch.empty(num_queries, num_heads, self.head_dim))
        trunc_normal_(self.query, std=self.head_dim ** -0.5)
        self.to_k = nn.Linear(in_width, out_width, bias=False)
        self.to_v = nn.Linear(in_width, out_width, bias=False)
        self.pos_bias = nn.Parameter(torch.zeros(num_queries, num_heads, kernel_size, kernel_size))
        self.attn_scale = nn.Parameter(torch.empty(num_queries, num_heads, kernel_size, kernel_size))
        nn.init.normal_(self.attn_scale, std=0.02)
        self.to_out = nn.Linear(out_width, out_width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        query = F.normalize(self.query, dim=-1, eps=1e-6) * self.head_dim ** -0.5  # [Q, heads, D]
        key_weight = self.to_k.weight.view(self.num_heads, self.head_dim, -1)  # [heads, D, C_in]
        query_key = torch.einsum("qhd,hdc->cqh", query, key_weight)  # [C_in, Q, heads]: Wk folded into q
        logits = (x @ query_key.flatten(1)).view(b, h, w, *query_key.shape[1:])  # [B, H, W, Q, heads]
        v = self.to_v(x).view(b, h, w, self.num_heads, self.head_dim)
        return self.to_out(kernels.qna_attention(logits, v, self.pos_bias, self.attn_scale, self.stride))


class QnABlock(nn.Module):
    """QnA-ViT block: ``x + QnA(LN(x))``, ``x + MLP(LN(x))`` (stride 1)."""

    def __init__(self, width: int, mixer: QnAMixer, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = LayerNorm(width)
        self.attn = QnAttention(width, width, mixer.num_heads, mixer.kernel_size, mixer.num_queries)
        self.norm2 = LayerNorm(width)
        self.mlp = Mlp(width, hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class QnADownsample(nn.Module):
    """QnA-ViT's downsampling block: ``conv1x1_s2(x) + QnA_s2(LN(x))`` then ``x + MLP(LN(x))``."""

    def __init__(self, in_width: int, out_width: int, num_heads: int, hidden: int, kernel_size: int = 3,
                 num_queries: int = 2) -> None:
        super().__init__()
        self.skip = nn.Conv2d(in_width, out_width, 1, stride=2, bias=False)
        self.norm1 = LayerNorm(in_width)
        self.attn = QnAttention(in_width, out_width, num_heads, kernel_size, num_queries, stride=2)
        self.norm2 = LayerNorm(out_width)
        self.mlp = Mlp(out_width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nhwc(self.skip(nchw(x))) + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def build_qna_block(width: int, mixer: QnAMixer, hidden: int, index: int, drop_path: float) -> nn.Module:
    return QnABlock(width, mixer, hidden, drop_path)
