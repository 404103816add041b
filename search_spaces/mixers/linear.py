"""L2ViT (Zheng, 2025): linear global attention (LGA) with its local concentration module (LCM), and L2ViT's
local window attention block (LWA) that it alternates with. NHWC in/out."""
from __future__ import annotations

import torch
from torch import nn

import kernels
from search_spaces.mixers.common import ConvPosEnc, DropPath, LayerNorm, Mlp, nchw, nhwc
from search_spaces.mixers.window import WindowAttention
from search_spaces.spec import LinearMixer

NORMALISER_FLOOR = 100.0  # L2ViT clamps q . sum(k) at 1e2: "makes training stable and boosts performance"


class LinearAttention(nn.Module):
    """ReLU-kernel linear attention over all tokens with a learned per-head temperature (init head_dim ** -0.5)."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, width // num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.temperature = nn.Parameter(torch.full((num_heads,), self.head_dim ** -0.5))
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        q, k, v = self.qkv(x).view(b, h * w, 3, self.num_heads, self.head_dim).unbind(2)
        out = kernels.linear_attention(q, k, v, self.temperature, NORMALISER_FLOOR)
        return self.proj(out.reshape(b, h, w, c))


class LocalConcentration(nn.Module):
    """LCM: depthwise 7x7 -> GELU -> BN -> depthwise 7x7 (restores the locality linear attention lacks)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 7, padding=3, groups=width)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 7, padding=3, groups=width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nhwc(self.conv2(self.bn(self.act(self.conv1(nchw(x))))))


class LinearAttentionBlock(nn.Module):
    """L2ViT LGA block: CPE; ``x + LGA(LN(x))``; ``x + LCM(LN(x))``; ``x + MLP(LN(x))``."""

    def __init__(self, width: int, num_heads: int, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.cpe = ConvPosEnc(width)
        self.norm1 = LayerNorm(width)
        self.attn = LinearAttention(width, num_heads)
        self.norm3 = LayerNorm(width)
        self.lcm = LocalConcentration(width)
        self.norm2 = LayerNorm(width)
        self.mlp = Mlp(width, hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.lcm(self.norm3(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class LocalWindowBlock(nn.Module):
    """L2ViT LWA block: CPE; ``x + WMSA(LN(x))`` (no shift, no relative bias); CPE; ``x + MLP(LN(x))``."""

    def __init__(self, width: int, num_heads: int, window_size: int, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.cpe1 = ConvPosEnc(width)
        self.norm1 = LayerNorm(width)
        self.attn = WindowAttention(width, num_heads, window_size, relative_bias=False)
        self.cpe2 = ConvPosEnc(width)
        self.norm2 = LayerNorm(width)
        self.mlp = Mlp(width, hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe1(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = self.cpe2(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def build_linear_block(width: int, mixer: LinearMixer, hidden: int, index: int, drop_path: float) -> nn.Module:
    if mixer.alternate and index % 2 == 0:
        return LocalWindowBlock(width, mixer.num_heads, mixer.window_size, hidden, drop_path)
    return LinearAttentionBlock(width, mixer.num_heads, hidden, drop_path)
