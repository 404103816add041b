"""BatchNorm folding: the deployed network computes what the trained one does, with fewer modules."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import search_spaces._compat  # noqa: F401
from search_spaces import TINY_ARCHS, build_model
from search_spaces.deploy import fold_batchnorm, folded_conv
from search_spaces.mixers.common import ConvNorm
from search_spaces.mixers.conv import RepVGGDepthwise


def _randomise_batchnorms(model: nn.Module, seed: int) -> None:
    """Give every BatchNorm running statistics and an affine map far from the identity, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator))
                module.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.2)
                module.weight.copy_(torch.randn(n, generator=generator))
                module.bias.copy_(torch.randn(n, generator=generator))


def test_a_folded_conv_equals_conv_then_batchnorm_on_odd_shapes() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, kernel_size=3, stride=2, padding=1, groups=2, bias=False)
    bn = nn.BatchNorm2d(10).eval()
    _randomise_batchnorms(bn, seed=1)
    x = torch.randn(3, 6, 13, 11)
    fused = folded_conv(conv, bn)
    assert fused.bias is not None and fused.weight.shape == conv.weight.shape
    torch.testing.assert_close(fused(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny_conv", "tiny_single_head"])
def test_folding_keeps_the_outputs_and_removes_every_foldable_batchnorm(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(TINY_ARCHS[name], num_classes=7).eval()
    _randomise_batchnorms(model, seed=2)
    x = torch.randn(2, 3, 37, 37)
    with torch.no_grad():
        before = model(x)
        batchnorms_before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        folded = fold_batchnorm(model)
        after = folded(x)
    assert folded is model
    assert not any(isinstance(m, (ConvNorm, RepVGGDepthwise)) for m in model.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) < batchnorms_before
    assert before.shape == (2, 7)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
