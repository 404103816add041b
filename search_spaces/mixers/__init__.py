"""The six token mixers, one `MixerEntry` each: spec, block builder, sampler, the specs the sampler can return,
and the period of their blocks. `build_block(width, mixer, hidden, index, drop_path)` returns the block that a
stage repeats: NHWC ``[B, H, W, C]`` in and out."""
from __future__ import annotations

import itertools
from typing import Iterator

from torch import nn

from search_spaces.mixer_registry import MixerEntry, load_entry_points, mixer_entry, register_mixer
from search_spaces.mixers.conv import build_conv_block
from search_spaces.mixers.linear import build_linear_block
from search_spaces.mixers.qna import QnADownsample, build_qna_block
from search_spaces.mixers.single_head import build_single_head_block
from search_spaces.mixers.strip import build_strip_block
from search_spaces.mixers.window import build_window_block
from search_spaces.space import SearchSpace, Trial, heads_for, partial_dim_for
from search_spaces.spec import (
    ConvMixer, LinearMixer, MixerSpec, QnAMixer, SingleHeadMixer, StripMixer, WindowMixer,
)

__all__ = ["build_block", "QnADownsample"]


def build_block(width: int, mixer: MixerSpec, hidden: int, index: int, drop_path: float = 0.0) -> nn.Module:
    """The `index`-th block (0-based, within its stage) of a stage of `mixer` blocks."""
    return mixer_entry(mixer.kind).build_block(width, mixer, hidden, index, drop_path)


def _heads(trial: Trial, prefix: str, width: int, space: SearchSpace, even: bool = False) -> int:
    return heads_for(width, trial.suggest_categorical(f"{prefix}_head_dim", space.head_dims), even)


# ------------------------------------------------------------------------------------------------------ conv
def _sample_conv(trial: Trial, prefix: str, width: int, space: SearchSpace) -> ConvMixer:
    if trial.suggest_categorical(f"{prefix}_variant", space.conv_variants) == "repvit":
        return ConvMixer(kernel_size=3, variant="repvit")
    return ConvMixer(kernel_size=trial.suggest_categorical(f"{prefix}_kernel_size", space.conv_kernel_sizes))


def _conv_choices(space: SearchSpace, width: int) -> Iterator[ConvMixer]:
    if "convnext" in space.conv_variants:
        yield from (ConvMixer(k) for k in space.conv_kernel_sizes)
    if "repvit" in space.conv_variants:
        yield ConvMixer(3, "repvit")


# ---------------------------------------------------------------------------------------------------- window
def _sample_window(trial: Trial, prefix: str, width: int, space: SearchSpace) -> WindowMixer:
    return WindowMixer(num_heads=_heads(trial, prefix, width, space),
                       window_size=trial.suggest_categorical(f"{prefix}_window_size", space.window_sizes),
                       shift=trial.suggest_categorical(f"{prefix}_shift", (True, False)))


def _window_choices(space: SearchSpace, width: int) -> Iterator[WindowMixer]:
    for head_dim, window, shift in itertools.product(space.head_dims, space.window_sizes, (True, False)):
        yield WindowMixer(heads_for(width, head_dim), window, shift)


# ---------------------------------------------------------------------------------------------------- linear
def _sample_linear(trial: Trial, prefix: str, width: int, space: SearchSpace) -> LinearMixer:
    return LinearMixer(num_heads=_heads(trial, prefix, width, space),
                       alternate=trial.suggest_categorical(f"{prefix}_alternate", (True, False)),
                       window_size=trial.suggest_categorical(f"{prefix}_window_size", space.window_sizes))


def _linear_choices(space: SearchSpace, width: int) -> Iterator[LinearMixer]:
    for head_dim, alternate, window in itertools.product(space.head_dims, (True, False), space.window_sizes):
        yield LinearMixer(heads_for(width, head_dim), alternate, window)


# ----------------------------------------------------------------------------------------------- single_head
def _sample_single_head(trial: Trial, prefix: str, width: int, space: SearchSpace) -> SingleHeadMixer:
    ratio = trial.suggest_categorical(f"{prefix}_partial_ratio", space.partial_ratios)
    return SingleHeadMixer(partial_dim=partial_dim_for(width, ratio),
                           qk_dim=trial.suggest_categorical(f"{prefix}_qk_dim", space.qk_dims))


def _single_head_choices(space: SearchSpace, width: int) -> Iterator[SingleHeadMixer]:
    for ratio, qk_dim in itertools.product(space.partial_ratios, space.qk_dims):
        yield SingleHeadMixer(partial_dim_for(width, ratio), qk_dim)


# ----------------------------------------------------------------------------------------------------- strip
def _sample_strip(trial: Trial, prefix: str, width: int, space: SearchSpace) -> StripMixer:
    return StripMixer(num_heads=_heads(trial, prefix, width, space, even=True),
                      stripe_width=trial.suggest_categorical(f"{prefix}_stripe_width", space.stripe_widths))


def _strip_choices(space: SearchSpace, width: int) -> Iterator[StripMixer]:
    for head_dim, stripe in itertools.product(space.head_dims, space.stripe_widths):
        yield StripMixer(heads_for(width, head_dim, even=True), stripe)


# ------------------------------------------------------------------------------------------------------- qna
def _sample_qna(trial: Trial, prefix: str, width: int, space: SearchSpace) -> QnAMixer:
    return QnAMixer(num_heads=_heads(trial, prefix, width, space),
                    kernel_size=trial.suggest_categorical(f"{prefix}_kernel_size", space.qna_kernel_sizes),
                    num_queries=trial.suggest_categorical(f"{prefix}_num_queries", space.qna_num_queries))


def _qna_choices(space: SearchSpace, width: int) -> Iterator[QnAMixer]:
    for head_dim, k, queries in itertools.product(space.head_dims, space.qna_kernel_sizes, space.qna_num_queries):
        yield QnAMixer(heads_for(width, head_dim), k, queries)


for _entry in (
    MixerEntry(ConvMixer, build_conv_block, _sample_conv, _conv_choices),
    MixerEntry(WindowMixer, build_window_block, _sample_window, _window_choices,
               period=lambda spec: 2 if spec.shift else 1),  # shifted windows on odd blocks
    MixerEntry(LinearMixer, build_linear_block, _sample_linear, _linear_choices,
               period=lambda spec: 2 if spec.alternate else 1),  # window / linear attention alternate
    MixerEntry(SingleHeadMixer, build_single_head_block, _sample_single_head, _single_head_choices),
    MixerEntry(StripMixer, build_strip_block, _sample_strip, _strip_choices),
    MixerEntry(QnAMixer, build_qna_block, _sample_qna, _qna_choices),
):
    register_mixer(_entry)
load_entry_points()  # users' own mixers (entry-point group hybrid_nas.mixers), after the built-ins
