"""Every mixer's block and every transition: forward + backward at odd resolutions and widths, finite values."""
from __future__ import annotations

import pytest
import torch

from search_spaces import ConvMixer, DownsampleSpec, LinearMixer, QnAMixer, SingleHeadMixer, StripMixer, WindowMixer
from search_spaces.mixers import build_block
from search_spaces.transitions import build_stem, build_transition
from search_spaces.spec import StemSpec

# (id, width, mixer): odd widths, head dims 12..20, every variant of every mixer.
MIXERS = [
    ("convnext-k5-w36", 36, ConvMixer(5)),
    ("repvit-w44", 44, ConvMixer(3, "repvit")),
    ("window-M4-shift-w36h3", 36, WindowMixer(num_heads=3, window_size=4, shift=True)),
    ("window-M7-noshift-w40h2", 40, WindowMixer(num_heads=2, window_size=7, shift=False)),
    ("linear-alternate-w36h3", 36, LinearMixer(num_heads=3, alternate=True, window_size=5)),
    ("linear-only-w40h4", 40, LinearMixer(num_heads=4, alternate=False)),
    ("single_head-p13-qk16-w52", 52, SingleHeadMixer(partial_dim=13, qk_dim=16)),
    ("single_head-p26-qk8-w60", 60, SingleHeadMixer(partial_dim=26, qk_dim=8)),
    ("strip-sw2-w48h4", 48, StripMixer(num_heads=4, stripe_width=2)),
    ("strip-sw3-w36h2", 36, StripMixer(num_heads=2, stripe_width=3)),
    ("qna-k3-q2-w36h3", 36, QnAMixer(num_heads=3, kernel_size=3, num_queries=2)),
    ("qna-k5-q1-w40h5", 40, QnAMixer(num_heads=5, kernel_size=5, num_queries=1)),
]
RESOLUTIONS = [(13, 17), (7, 7), (28, 28)]


def _wake_residual_branches(module: torch.nn.Module) -> None:
    """Residual branches that start at zero or near it (SHViT's zero-init BN, ConvNeXt's 1e-6 layer scale) are
    set to one, so that each branch's effect on the output is visible."""
    for name, param in module.named_parameters():
        if name.endswith("gamma") or (name.endswith("bn.weight") and not param.detach().any()):
            torch.nn.init.ones_(param)


@pytest.mark.parametrize("resolution", RESOLUTIONS, ids=lambda r: f"{r[0]}x{r[1]}")
@pytest.mark.parametrize("width, mixer", [m[1:] for m in MIXERS], ids=[m[0] for m in MIXERS])
def test_block_forward_backward_is_finite(width: int, mixer, resolution: tuple[int, int]) -> None:
    torch.manual_seed(0)
    # two blocks so that shifted windows and window/linear alternation are both exercised
    blocks = torch.nn.Sequential(build_block(width, mixer, 2 * width, 0), build_block(width, mixer, 2 * width, 1))
    _wake_residual_branches(blocks)
    x = torch.randn(2, *resolution, width, requires_grad=True)
    y = blocks(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    grads = [p.grad for p in blocks.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert (y - x).abs().mean() > 1e-2  # the block changed its input


@pytest.mark.parametrize("kind", ["none", "conv2x2", "shvit", "qna"])
@pytest.mark.parametrize("resolution", [(13, 17), (7, 7)], ids=lambda r: f"{r[0]}x{r[1]}")
def test_transition_output_is_ceil_half(kind: str, resolution: tuple[int, int]) -> None:
    torch.manual_seed(0)
    spec = DownsampleSpec(kind, 4 if kind == "qna" else 0)
    layer = build_transition(spec, 36, 64, mlp_ratio=2.0)
    x = torch.randn(2, *resolution, 36, requires_grad=True)
    y = layer(x)
    h, w = resolution
    expected = (h, w) if kind == "none" else (-(-h // 2), -(-w // 2))
    assert y.shape == (2, *expected, 64)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("kind", ["patch", "conv"])
@pytest.mark.parametrize("stride", [4, 8, 16])
def test_stem_output_is_ceil_of_stride(kind: str, stride: int) -> None:
    stem = build_stem(StemSpec(stride=stride, width=40, kind=kind), in_chans=3)
    y = stem(torch.randn(1, 3, 37, 50))
    assert y.shape == (1, 40, -(-37 // stride), -(-50 // stride))


def test_window_attention_clamps_window_to_small_maps() -> None:
    block = build_block(32, WindowMixer(num_heads=2, window_size=7, shift=True), 64, index=1)
    assert block.shift_size == 3
    assert block.attn.effective_window(5, 9, 3) == (5, 0)
    assert block.attn.effective_window(13, 17, 3) == (7, 3)
    y = block(torch.randn(1, 5, 9, 32))  # 5x9 map: one 5x5-window row, unshifted, table cropped to 9x9
    assert torch.isfinite(y).all()


def test_single_head_attention_leaves_passthrough_channels_to_the_projection() -> None:
    torch.manual_seed(0)
    block = build_block(48, SingleHeadMixer(partial_dim=12, qk_dim=16), 96, 0)
    attn = block.attn
    x = torch.randn(1, 6, 5, 48)
    base = attn(x)
    changed = x.clone()
    changed[..., 12:] += 1.0  # only the pass-through channels change
    # BN in eval mode with its init is the identity; the projection's BN starts at 0, so give it weight first
    torch.nn.init.ones_(attn.proj[1].bn.weight)
    attn.eval()
    assert not torch.allclose(attn(x), attn(changed))
    assert base.shape == x.shape
