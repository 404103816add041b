"""Swin window attention (Liu et al., 2021) and its block. NHWC in/out."""
from __future__ import annotations

import torch
from torch import nn

import kernels
from search_spaces.mixers.common import DropPath, LayerNorm, Mlp, trunc_normal_
from search_spaces.spec import WindowMixer


class WindowAttention(nn.Module):
    """Multi-head self-attention inside M x M windows, with an optional relative position bias.

    The window is clamped to the feature map (as Swin does: a map no larger than M is one window, unshifted);
    H and W need not be multiples of M: the op pads and masks the pad tokens.
    """

    def __init__(self, width: int, num_heads: int, window_size: int, relative_bias: bool = True) -> None:
        super().__init__()
        self.num_heads, self.window_size = num_heads, window_size
        self.head_dim = width // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.rel_pos_table = None
        if relative_bias:
            self.rel_pos_table = nn.Parameter(torch.zeros(num_heads, 2 * window_size - 1, 2 * window_size - 1))
            trunc_normal_(self.rel_pos_table, std=0.02)

    def effective_window(self, height: int, width: int, shift_size: int) -> tuple[int, int]:
        """(window, shift) actually used on a height x width map."""
        if min(height, width) <= self.window_size:
            return min(height, width), 0
        return self.window_size, shift_size

    def forward(self, x: torch.Tensor, shift_size: int = 0) -> torch.Tensor:
        b, h, w, c = x.shape
        window, shift = self.effective_window(h, w, shift_size)
        q, k, v = self.qkv(x).view(b, h, w, 3, self.num_heads, self.head_dim).unbind(3)
        table = self.rel_pos_table
        if table is not None and window < self.window_size:  # the centre of the table covers the smaller window
            start = self.window_size - window
            table = table[:, start:start + 2 * window - 1, start:start + 2 * window - 1]
        out = kernels.window_attention(q, k, v, table, window, shift, self.scale)
        return self.proj(out.reshape(b, h, w, c))


class SwinBlock(nn.Module):
    """``x + WMSA(LN(x))``, ``x + MLP(LN(x))``; odd blocks of a stage shift their windows by M // 2."""

    def __init__(self, width: int, mixer: WindowMixer, hidden: int, index: int, drop_path: float) -> None:
        super().__init__()
        self.shift_size = mixer.window_size // 2 if mixer.shift and index % 2 == 1 else 0
        self.norm1 = LayerNorm(width)
        self.attn = WindowAttention(width, mixer.num_heads, mixer.window_size)
        self.norm2 = LayerNorm(width)
        self.mlp = Mlp(width, hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), self.shift_size))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def build_window_block(width: int, mixer: WindowMixer, hidden: int, index: int, drop_path: float) -> nn.Module:
    return SwinBlock(width, mixer, hidden, index, drop_path)
