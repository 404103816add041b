"""Strip attention, in the CSWin sense (Dong et al., 2022): cross-shaped windows made of one vertical and one
horizontal stripe of width sw, half the heads each, plus LePE. NHWC in/out.

(the mixer specification allows S2AFormer's strip attention or CSWin stripes; this project implements CSWin's.
One deviation: LePE's depthwise 3x3 runs over the whole map of V rather than per stripe, so it also sees across
stripe edges.)
"""
from __future__ import annotations

import torch
from torch import nn

import kernels
from search_spaces.mixers.common import DropPath, LayerNorm, Mlp, nchw, nhwc
from search_spaces.spec import StripMixer


class StripAttention(nn.Module):
    """CSWin attention: heads [0, n/2) in vertical stripes, [n/2, n) in horizontal ones; out + LePE(V); proj."""

    def __init__(self, width: int, num_heads: int, stripe_width: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.stripe_width = num_heads, width // num_heads, stripe_width
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(width, 3 * width)
        self.lepe = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        q, k, v = self.qkv(x).view(b, h, w, 3, self.num_heads, self.head_dim).unbind(3)
        out = kernels.strip_attention(q, k, v, self.stripe_width, self.scale).reshape(b, h, w, c)
        return self.proj(out + nhwc(self.lepe(nchw(v.reshape(b, h, w, c)))))


class StripBlock(nn.Module):
    """CSWin block: ``x + Attn(LN(x))``, ``x + MLP(LN(x))``."""

    def __init__(self, width: int, mixer: StripMixer, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = LayerNorm(width)
        self.attn = StripAttention(width, mixer.num_heads, mixer.stripe_width)
        self.norm2 = LayerNorm(width)
        self.mlp = Mlp(width, hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def build_strip_block(width: int, mixer: StripMixer, hidden: int, index: int, drop_path: float) -> nn.Module:
    return StripBlock(width, mixer, hidden, drop_path)
