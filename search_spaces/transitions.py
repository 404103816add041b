"""Stems (image -> first feature map) and stage transitions (downsampling or width projection).

Stems take NCHW images and return NCHW maps; transitions take and return NHWC ``[B, H, W, C]``. Every stride-s
layer outputs ``ceil(H / s) x ceil(W / s)``, matching `ArchSpec.stage_resolutions`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.mixers import QnADownsample
from search_spaces.mixers.common import ConvFFN, ConvNorm, LayerNorm, nchw, nhwc
from search_spaces.mixers.common import timm  # imported through the compatibility shim
from search_spaces.spec import DownsampleSpec, StemSpec, mlp_hidden_width

SqueezeExcite = timm.layers.SqueezeExcite


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad an NCHW tensor at the bottom/right so H and W are multiples of `multiple`."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % multiple, 0, -h % multiple)) if h % multiple or w % multiple else x


class PatchStem(nn.Module):
    """Swin/ConvNeXt stem: non-overlapping stride x stride conv, then LayerNorm."""

    def __init__(self, in_chans: int, width: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.proj = nn.Conv2d(in_chans, width, stride, stride)
        self.norm = LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nchw(self.norm(nhwc(self.proj(_pad_to_multiple(x, self.stride)))))


class ConvStem(nn.Sequential):
    """SHViT/L2ViT stem: log2(stride) 3x3 stride-2 conv-BN layers, ReLU between them, widths doubling to `width`."""

    def __init__(self, in_chans: int, width: int, stride: int) -> None:
        super().__init__()
        layers = int(math.log2(stride))
        chans = [in_chans] + [max(8, width >> (layers - 1 - i)) for i in range(layers)]
        for i in range(layers):
            self.add_module(f"conv{i}", ConvNorm(chans[i], chans[i + 1], 3, stride=2))
            if i < layers - 1:
                self.add_module(f"act{i}", nn.ReLU())


def build_stem(spec: StemSpec, in_chans: int) -> nn.Module:
    return (PatchStem if spec.kind == "patch" else ConvStem)(in_chans, spec.width, spec.stride)


class Conv2x2Downsample(nn.Module):
    """LayerNorm then a 2x2 stride-2 conv (Swin patch merging, ConvNeXt and L2ViT downsampling)."""

    def __init__(self, in_width: int, out_width: int) -> None:
        super().__init__()
        self.norm = LayerNorm(in_width)
        self.conv = nn.Conv2d(in_width, out_width, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nhwc(self.conv(_pad_to_multiple(nchw(self.norm(x)), 2)))


class DepthwiseResidual(nn.Module):
    """``x + dw3x3_BN(x)``, NHWC."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = ConvNorm(width, width, 3, groups=width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + nhwc(self.conv(nchw(x)))


class FFNResidual(ConvFFN):
    """``x + FFN(x)``, NHWC."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


class SHViTDownsample(nn.Module):
    """SHViT's downsampling: dw+FFN residuals, patch merging (1x1 x4 -> dw3x3 s2 -> SE -> 1x1), dw+FFN residuals."""

    def __init__(self, in_width: int, out_width: int) -> None:
        super().__init__()
        hidden = 4 * in_width
        self.pre = nn.Sequential(DepthwiseResidual(in_width), FFNResidual(in_width, 2 * in_width))
        self.merge = nn.Sequential(
            ConvNorm(in_width, hidden), nn.ReLU(), ConvNorm(hidden, hidden, 3, stride=2, groups=hidden), nn.ReLU(),
            SqueezeExcite(hidden, 0.25), ConvNorm(hidden, out_width))
        self.post = nn.Sequential(DepthwiseResidual(out_width), FFNResidual(out_width, 2 * out_width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(nhwc(self.merge(nchw(self.pre(x)))))


def build_transition(spec: DownsampleSpec, in_width: int, out_width: int, mlp_ratio: float) -> nn.Module:
    """The layer at the start of a stage; identity when nothing changes."""
    if spec.kind == "conv2x2":
        return Conv2x2Downsample(in_width, out_width)
    if spec.kind == "shvit":
        return SHViTDownsample(in_width, out_width)
    if spec.kind == "qna":
        return QnADownsample(in_width, out_width, spec.num_heads, mlp_hidden_width(out_width, mlp_ratio))
    return nn.Linear(in_width, out_width) if in_width != out_width else nn.Identity()
