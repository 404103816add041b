"""The six token mixers' blocks. `build_block(width, mixer, hidden, index, drop_path)` returns the block that a
stage repeats: NHWC ``[B, H, W, C]`` in and out."""
from __future__ import annotations

from typing import Callable

from torch import nn

from search_spaces.mixers.conv import build_conv_block
from search_spaces.mixers.linear import build_linear_block
from search_spaces.mixers.qna import QnADownsample, build_qna_block
from search_spaces.mixers.single_head import build_single_head_block
from search_spaces.mixers.strip import build_strip_block
from search_spaces.mixers.window import build_window_block
from search_spaces.spec import MixerSpec

__all__ = ["BLOCK_BUILDERS", "build_block", "QnADownsample"]

BLOCK_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "conv": build_conv_block,
    "window": build_window_block,
    "linear": build_linear_block,
    "single_head": build_single_head_block,
    "strip": build_strip_block,
    "qna": build_qna_block,
}


def build_block(width: int, mixer: MixerSpec, hidden: int, index: int, drop_path: float = 0.0) -> nn.Module:
    """The `index`-th block (0-based, within its stage) of a stage of `mixer` blocks."""
    return BLOCK_BUILDERS[mixer.kind](width, mixer, hidden, index, drop_path)
