"""SHViT (Yun & Ro, 2024): single-head attention on a slice of the channels, and its block. NHWC in/out."""
from __future__ import annotations

import torch
from torch import nn

import kernels
from search_spaces.mixers.common import ConvFFN, ConvNorm, DropPath, nchw, nhwc
from search_spaces.spec import SingleHeadMixer


class SingleHeadAttention(nn.Module):
    """The first `partial_dim` channels go through one softmax head (q/k dim `qk_dim`, v dim `partial_dim`),
    the rest pass through; both are concatenated and mixed by ReLU -> 1x1 conv-BN."""

    def __init__(self, width: int, partial_dim: int, qk_dim: int) -> None:
        super().__init__()
        self.partial_dim, self.qk_dim = partial_dim, qk_dim
        self.scale = qk_dim ** -0.5
        self.pre_norm = nn.GroupNorm(1, partial_dim)
        self.qkv = ConvNorm(partial_dim, 2 * qk_dim + partial_dim)
        self.proj = nn.Sequential(nn.ReLU(), ConvNorm(width, width, bn_weight_init=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        attended, passed = torch.split(x, [self.partial_dim, c - self.partial_dim], dim=-1)
        qkv = self.qkv(self.pre_norm(nchw(attended))).flatten(2).transpose(1, 2)  # [B, N, 2*qk + pdim]
        q, k, v = torch.split(qkv, [self.qk_dim, self.qk_dim, self.partial_dim], dim=-1)
        attended = kernels.single_head_attention(q, k, v, self.scale).view(b, h, w, self.partial_dim)
        return nhwc(self.proj(nchw(torch.cat([attended, passed], dim=-1))))


class SingleHeadBlock(nn.Module):
    """SHViT block: ``x + dw3x3_BN(x)``; ``x + SHSA(x)``; ``x + FFN(x)``."""

    def __init__(self, width: int, mixer: SingleHeadMixer, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.conv = ConvNorm(width, width, 3, groups=width, bn_weight_init=0.0)
        self.attn = SingleHeadAttention(width, mixer.partial_dim, mixer.qk_dim)
        self.ffn = ConvFFN(width, hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(nhwc(self.conv(nchw(x))))
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.ffn(x))


def build_single_head_block(width: int, mixer: SingleHeadMixer, hidden: int, index: int,
                            drop_path: float) -> nn.Module:
    return SingleHeadBlock(width, mixer, hidden, drop_path)
