"""The search space as data (`SearchSpace`), and define-by-run sampling of an `ArchSpec` from an Optuna trial.

Every choice list is fixed per parameter name, so samplers see stable distributions; choices that depend on
earlier ones (the number of heads given a width) are derived, never sampled, so every sampled point is valid.
Parameter names: ``stem_kind``, ``stem_stride``, ``num_stages``, then per stage i ``s{i}_width``, ``s{i}_depth``,
``s{i}_mlp_ratio``, ``s{i}_mixer``, ``s{i}_downsample`` and the chosen mixer's own ``s{i}_{mixer}_{field}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from search_spaces.spec import (
    ArchSpec, ConvMixer, DownsampleSpec, HeadSpec, LinearMixer, MixerSpec, QnAMixer, SingleHeadMixer, StageSpec,
    StemSpec, StripMixer, WindowMixer,
)

__all__ = ["SearchSpace", "DEFAULT_SPACE", "CIFAR_SPACE", "sample_arch", "sample_archs", "heads_for",
           "partial_dim_for"]


class Trial(Protocol):
    """The part of `optuna.trial.Trial` that sampling uses."""

    def suggest_categorical(self, name: str, choices: tuple) -> object: ...


@dataclass(frozen=True)
class SearchSpace:
    """Choices of the space. ``widths[i]``/``depths[i]`` are the choices of stage i; all widths are multiples of 32
    so every head-dim choice divides them."""
    stem_kinds: tuple[str, ...] = ("patch", "conv")
    stem_strides: tuple[int, ...] = (4, 8, 16)
    num_stages: tuple[int, ...] = (3, 4)
    widths: tuple[tuple[int, ...], ...] = ((32, 64, 96, 128), (64, 96, 128, 192, 256), (128, 192, 256, 320, 384),
                                           (256, 384, 512, 640, 768))
    depths: tuple[tuple[int, ...], ...] = ((1, 2, 3), (1, 2, 3, 4), (2, 4, 6, 8), (1, 2, 3))
    mlp_ratios: tuple[float, ...] = (2.0, 3.0, 4.0)
    mixers: tuple[str, ...] = ("conv", "window", "linear", "single_head", "strip", "qna")
    downsamples: tuple[str, ...] = ("conv2x2", "shvit", "qna")
    conv_kernel_sizes: tuple[int, ...] = (3, 5, 7)
    conv_variants: tuple[str, ...] = ("convnext", "repvit")
    head_dims: tuple[int, ...] = (16, 32)
    window_sizes: tuple[int, ...] = (4, 7, 8, 14)
    stripe_widths: tuple[int, ...] = (1, 2, 4, 7)
    qna_kernel_sizes: tuple[int, ...] = (3, 5, 7)
    qna_num_queries: tuple[int, ...] = (1, 2)
    partial_ratios: tuple[float, ...] = (0.125, 0.25, 0.375, 0.5)
    qk_dims: tuple[int, ...] = (8, 16, 32)
    qna_downsample_head_dim: int = 16
    num_classes: int = 1000


DEFAULT_SPACE = SearchSpace()
# Small networks for 32x32 images (CIFAR): low strides, narrow stages.
CIFAR_SPACE = SearchSpace(stem_strides=(4,), widths=((32, 64), (64, 96, 128), (128, 192), (192, 256)),
                          depths=((1, 2), (1, 2), (1, 2, 3), (1, 2)), window_sizes=(4, 8), stripe_widths=(1, 2, 4),
                          num_classes=10)


def heads_for(width: int, head_dim: int, even: bool = False) -> int:
    """Number of heads of `head_dim` channels on `width`; with `even` (stripes), an odd count is doubled (the head
    dim halved) so that both stripe directions get half."""
    heads = width // head_dim
    return heads * 2 if even and heads % 2 else heads


def partial_dim_for(width: int, ratio: float) -> int:
    """SHViT's attended channels for a `ratio` of `width`, at least width // 8."""
    return max(width // 8, int(width * ratio))


def _heads(trial: Trial, prefix: str, width: int, space: SearchSpace, even: bool = False) -> int:
    return heads_for(width, trial.suggest_categorical(f"{prefix}_head_dim", space.head_dims), even)


def _sample_mixer(trial: Trial, kind: str, prefix: str, width: int, space: SearchSpace) -> MixerSpec:
    prefix = f"{prefix}_{kind}"
    if kind == "conv":
        variant = trial.suggest_categorical(f"{prefix}_variant", space.conv_variants)
        if variant == "repvit":
            return ConvMixer(kernel_size=3, variant="repvit")
        return ConvMixer(kernel_size=trial.suggest_categorical(f"{prefix}_kernel_size", space.conv_kernel_sizes))
    if kind == "window":
        return WindowMixer(num_heads=_heads(trial, prefix, width, space),
                           window_size=trial.suggest_categorical(f"{prefix}_window_size", space.window_sizes),
                           shift=trial.suggest_categorical(f"{prefix}_shift", (True, False)))
    if kind == "linear":
        return LinearMixer(num_heads=_heads(trial, prefix, width, space),
                           alternate=trial.suggest_categorical(f"{prefix}_alternate", (True, False)),
                           window_size=trial.suggest_categorical(f"{prefix}_window_size", space.window_sizes))
    if kind == "single_head":
        ratio = trial.suggest_categorical(f"{prefix}_partial_ratio", space.partial_ratios)
        return SingleHeadMixer(partial_dim=partial_dim_for(width, ratio),
                               qk_dim=trial.suggest_categorical(f"{prefix}_qk_dim", space.qk_dims))
    if kind == "strip":
        return StripMixer(num_heads=_heads(trial, prefix, width, space, even=True),
                          stripe_width=trial.suggest_categorical(f"{prefix}_stripe_width", space.stripe_widths))
    if kind == "qna":
        return QnAMixer(num_heads=_heads(trial, prefix, width, space),
                        kernel_size=trial.suggest_categorical(f"{prefix}_kernel_size", space.qna_kernel_sizes),
                        num_queries=trial.suggest_categorical(f"{prefix}_num_queries", space.qna_num_queries))
    raise ValueError(f"unknown mixer kind {kind!r}")


def sample_arch(trial: Trial, space: SearchSpace = DEFAULT_SPACE) -> ArchSpec:
    """Sample a valid `ArchSpec` from `space` with an Optuna trial (define-by-run).

    Stage 0 keeps the stem's resolution and width; every later stage downsamples by 2.
    """
    stem_kind = trial.suggest_categorical("stem_kind", space.stem_kinds)
    stem_stride = trial.suggest_categorical("stem_stride", space.stem_strides)
    num_stages = trial.suggest_categorical("num_stages", space.num_stages)
    stages = []
    for i in range(num_stages):
        prefix = f"s{i}"
        width = trial.suggest_categorical(f"{prefix}_width", space.widths[i])
        depth = trial.suggest_categorical(f"{prefix}_depth", space.depths[i])
        mlp_ratio = trial.suggest_categorical(f"{prefix}_mlp_ratio", space.mlp_ratios)
        mixer = _sample_mixer(trial, trial.suggest_categorical(f"{prefix}_mixer", space.mixers), prefix, width, space)
        if i == 0:
            downsample = DownsampleSpec("none")
        else:
            kind = trial.suggest_categorical(f"{prefix}_downsample", space.downsamples)
            heads = width // space.qna_downsample_head_dim if kind == "qna" else 0
            downsample = DownsampleSpec(kind, heads)
        stages.append(StageSpec(mixer=mixer, width=width, depth=depth, mlp_ratio=mlp_ratio, downsample=downsample))
    return ArchSpec(stem=StemSpec(stride=stem_stride, width=stages[0].width, kind=stem_kind), stages=tuple(stages),
                    head=HeadSpec(space.num_classes))


def sample_archs(count: int, seed: int, space: SearchSpace = DEFAULT_SPACE) -> list[ArchSpec]:
    """`count` architectures drawn uniformly (Optuna's RandomSampler with `seed`), for benchmarks and tables."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    specs = []
    for _ in range(count):
        trial = study.ask()
        specs.append(sample_arch(trial, space))
        study.tell(trial, 0.0)
    return specs
