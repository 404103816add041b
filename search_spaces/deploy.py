"""The network as it is deployed: BatchNorm folded into the convolution before it (RepViT, SHViT ``Conv2d_BN``).

In eval mode a BatchNorm after a convolution is a per-channel affine map, so ``BN(conv(x))`` is one convolution
with scaled weights and a bias; RepViT's mixer ``BN(dw3x3_BN(x) + dw1x1(x) + x)`` is one depthwise 3x3 (Wang et
al., 2024, structural re-parameterisation). `fold_batchnorm` rewrites a trained (or freshly built) network that
way in place; outputs agree with the unfolded network in eval mode to float rounding. What stays: the BatchNorm of
L2ViT's local concentration module, which sits between a GELU and a padded depthwise conv (folding it there is not
exact at the borders), so it runs as it is. The latency tables count and time networks folded.
"""
from __future__ import annotations

import torch
from torch import nn

from search_spaces.mixers.common import ConvNorm, nchw, nhwc
from search_spaces.mixers.conv import RepVGGDepthwise

__all__ = ["fold_batchnorm", "folded_conv"]


def folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` (eval mode) as one `nn.Conv2d` with a bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


class FoldedDepthwise(nn.Module):
    """RepViT's token mixer after re-parameterisation: one depthwise 3x3 with a bias; NHWC in/out."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nhwc(self.conv(nchw(x)))


def _fold_repvgg(mixer: RepVGGDepthwise) -> FoldedDepthwise:
    """``BN(dw3x3_BN(x) + dw1x1(x) + x)`` as one depthwise 3x3."""
    conv3 = folded_conv(mixer.conv.conv, mixer.conv.bn)
    with torch.no_grad():
        weight = conv3.weight.clone()
        weight[:, :, 1:2, 1:2] += mixer.conv1.weight + 1.0  # the 1x1 branch and the identity at the centre tap
        conv3.weight.copy_(weight)
        conv3.bias.add_(mixer.conv1.bias)
    return FoldedDepthwise(folded_conv(conv3, mixer.bn))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every ``ConvNorm`` and RepViT mixer of `model` in place (eval mode; returns `model`)."""
    model.eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, RepVGGDepthwise):
                setattr(parent, name, _fold_repvgg(child))
            elif isinstance(child, ConvNorm):
                setattr(parent, name, folded_conv(child.conv, child.bn))
    return model
