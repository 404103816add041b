"""Layers shared by several blocks. Blocks work on NHWC tensors ``[B, H, W, C]``; convolutions run on the
NCHW view of the same memory (``permute`` is free, and the view is channels-last, which cuDNN runs natively)."""
from __future__ import annotations

import torch
from torch import nn

from search_spaces._compat import import_timm

timm = import_timm()
from timm.layers import DropPath, LayerNorm, Mlp, trunc_normal_  # noqa: E402

__all__ = ["nchw", "nhwc", "ConvNorm", "ConvFFN", "ConvPosEnc", "DropPath", "LayerNorm", "Mlp", "trunc_normal_"]


def nchw(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, W, C]`` -> ``[B, C, H, W]`` view."""
    return x.permute(0, 3, 1, 2)


def nhwc(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, H, W, C]`` view."""
    return x.permute(0, 2, 3, 1)


class ConvNorm(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (SHViT/RepViT ``Conv2d_BN``); NCHW in and out."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)


class ConvFFN(nn.Module):
    """SHViT/RepViT feed-forward on 1x1 convs: ConvNorm -> ReLU -> ConvNorm (last BN starts at 0); NHWC in/out."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.pw1 = ConvNorm(width, hidden)
        self.act = nn.ReLU()
        self.pw2 = ConvNorm(hidden, width, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nhwc(self.pw2(self.act(self.pw1(nchw(x)))))


class ConvPosEnc(nn.Module):
    """Conditional position encoding: ``x + depthwise3x3(x)`` (L2ViT CPE); NHWC in/out."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(width, width, 3, padding=1, groups=width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + nhwc(self.proj(nchw(x)))
