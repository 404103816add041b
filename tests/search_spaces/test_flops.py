"""fvcore FLOP counts of each mixer against its analytic formula (multiply-adds) within 2%."""
from __future__ import annotations

import pytest
import torch

from search_spaces import REFERENCE_ARCHS, TINY_ARCHS, count_flops, count_params, module_flops
from search_spaces.mixers.conv import ConvNeXtBlock
from search_spaces.mixers.linear import LinearAttention, LocalConcentration
from search_spaces.mixers.qna import QnAttention
from search_spaces.mixers.single_head import SingleHeadAttention
from search_spaces.mixers.strip import StripAttention
from search_spaces.mixers.window import WindowAttention

H, W, C = 14, 14, 64
N = H * W


def _flops(module: torch.nn.Module) -> int:
    return module_flops(module, torch.randn(1, H, W, C))


def test_window_attention_matches_4NC2_plus_2M2NC() -> None:
    heads, m = 4, 7
    softmax = heads * N * m * m
    assert _flops(WindowAttention(C, heads, m)) == pytest.approx(4 * N * C**2 + 2 * m * m * N * C + softmax, rel=0.02)


def test_linear_attention_with_lcm_matches_4NC2_plus_2NCd_plus_98NC() -> None:
    heads = 4
    d = C // heads
    counted = _flops(LinearAttention(C, heads)) + _flops(LocalConcentration(C))
    assert counted == pytest.approx(4 * N * C**2 + 2 * N * C * d + 98 * N * C, rel=0.02)


@pytest.mark.parametrize("pdim, qk_dim", [(16, 16), (32, 8)])
def test_single_head_matches_formula(pdim: int, qk_dim: int) -> None:
    softmax = N * N
    norms = 5 * N * pdim + 2 * N * (2 * qk_dim + pdim) + 2 * N * C  # fvcore: GroupNorm 5/element, BatchNorm 2
    expected = N * pdim * (2 * qk_dim + pdim) + N * N * (qk_dim + pdim) + N * C**2 + softmax + norms
    assert _flops(SingleHeadAttention(C, pdim, qk_dim)) == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("stripe_width", [1, 2, 7])
def test_strip_attention_matches_4NC2_plus_NC_sw_HW(stripe_width: int) -> None:
    heads = 4
    softmax = heads // 2 * N * stripe_width * (H + W)
    expected = 4 * N * C**2 + N * C * stripe_width * (H + W) + 9 * N * C + softmax
    assert _flops(StripAttention(C, heads, stripe_width)) == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("kernel_size, queries", [(3, 2), (5, 1)])
def test_qna_matches_formula(kernel_size: int, queries: int) -> None:
    heads = 4
    expected = (2 * N * C**2 + queries * C**2 + N * C * queries * heads
                + kernel_size**2 * N * queries * (C + heads))
    assert _flops(QnAttention(C, C, heads, kernel_size, queries)) == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_convnext_block_matches_k2NC_plus_mlp(kernel_size: int) -> None:
    hidden = 4 * C
    gelu = N * hidden
    expected = kernel_size**2 * N * C + 2 * N * C * hidden + gelu
    assert _flops(ConvNeXtBlock(C, kernel_size, hidden, 0.0)) == pytest.approx(expected, rel=0.02)


def test_count_flops_and_params_of_a_whole_network() -> None:
    spec = TINY_ARCHS["tiny_conv"]
    flops = count_flops(spec, resolution=32)
    assert count_flops(spec, resolution=32, batch=3) == 3 * flops
    assert count_flops(spec, resolution=64) == pytest.approx(4 * flops, rel=0.05)  # FLOPs ~ pixels (head aside)
    assert count_params(spec) == sum(p.numel() for p in __import__("search_spaces").build_model(spec).parameters())


def test_shvit_s1_like_is_close_to_published() -> None:
    spec = REFERENCE_ARCHS["shvit_s1_like"]
    assert count_params(spec) / 1e6 == pytest.approx(6.3, rel=0.03)  # SHViT-S1: 6.3M params, 241M FLOPs
    assert count_flops(spec) / 1e6 == pytest.approx(241, rel=0.03)
