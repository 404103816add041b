"""Convolutional blocks: ConvNeXt (depthwise k x k + LayerNorm + MLP + layer scale) and RepViT
(re-parameterisable BN'd depthwise 3x3 + BN FFN). NHWC in/out."""
from __future__ import annotations

import torch
from torch import nn

from search_spaces.mixers.common import ConvFFN, ConvNorm, DropPath, LayerNorm, Mlp, nchw, nhwc
from search_spaces.spec import ConvMixer


class ConvNeXtBlock(nn.Module):
    """``x + gamma * MLP(LN(dwconv_kxk(x)))`` (Liu et al., 2022)."""

    def __init__(self, width: int, kernel_size: int, hidden: int, drop_path: float, layer_scale_init: float = 1e-6):
        super().__init__()
        self.conv_dw = nn.Conv2d(width, width, kernel_size, padding=kernel_size // 2, groups=width)
        self.norm = LayerNorm(width)
        self.mlp = Mlp(width, hidden)
        self.gamma = nn.Parameter(torch.full((width,), layer_scale_init))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(nhwc(self.conv_dw(nchw(x)))))
        return x + self.drop_path(y * self.gamma)


class RepVGGDepthwise(nn.Module):
    """RepViT token mixer: ``BN(dw3x3_BN(x) + dw1x1(x) + x)``; foldable into one depthwise 3x3 for deployment."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = ConvNorm(width, width, 3, groups=width)
        self.conv1 = nn.Conv2d(width, width, 1, groups=width)
        self.bn = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nchw(x)
        return nhwc(self.bn(self.conv(y) + self.conv1(y) + y))


class RepViTBlock(nn.Module):
    """RepViT block (Wang et al., 2024) without squeeze-excite: RepVGG depthwise mixer, then a residual BN FFN."""

    def __init__(self, width: int, hidden: int, drop_path: float) -> None:
        super().__init__()
        self.token_mixer = RepVGGDepthwise(width)
        self.ffn = ConvFFN(width, hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.drop_path(self.ffn(x))


def build_conv_block(width: int, mixer: ConvMixer, hidden: int, index: int, drop_path: float) -> nn.Module:
    if mixer.variant == "repvit":
        return RepViTBlock(width, hidden, drop_path)
    return ConvNeXtBlock(width, mixer.kernel_size, hidden, drop_path)
