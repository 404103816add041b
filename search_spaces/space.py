"""The search space as data (`SearchSpace`), and define-by-run sampling of an `ArchSpec` from an Optuna trial.

Every choice list is fixed per parameter name, so samplers see stable distributions; choices that depend on
earlier ones (the number of heads given a width) are derived, never sampled, so every sampled point is valid.
Parameter names: ``stem_kind``, ``stem_stride``, ``num_stages``, then per stage i ``s{i}_width``, ``s{i}_depth``,
``s{i}_mlp_ratio``, ``s{i}_mixer``, ``s{i}_downsample`` and the chosen mixer's own ``s{i}_{mixer}_{field}``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from search_spaces.mixer_registry import mixer_entry
from search_spaces.spec import (
    MAX_RESOLUTION, MIN_RESOLUTION, ArchSpec, DownsampleSpec, HeadSpec, SpecError, StageSpec, StemSpec, mixer_types,
)

__all__ = ["MIN_RESOLUTION", "MAX_RESOLUTION", "SearchSpace", "DEFAULT_SPACE", "CIFAR_SPACE", "SPACES", "SpaceError",
           "load_space", "sample_arch", "sample_archs", "heads_for", "partial_dim_for"]




class SpaceError(SpecError):
    """A declared search space is invalid; the message names the field."""


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
    proxy_resolution: int = 64  # the data proxies' smallest input: smaller images are upsampled to it

    def downsample(self, kind: str, width: int) -> DownsampleSpec:
        """The transition of `kind` into a stage `width` wide (QnA's heads from `qna_downsample_head_dim`)."""
        return DownsampleSpec(kind, width // self.qna_downsample_head_dim if kind == "qna" else 0)

    def to_dict(self) -> dict[str, Any]:
        """The space as JSON-ready data (every choice list a list), as `load_space` reads it back."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Any, base: SearchSpace | None = None) -> SearchSpace:
        """A space from `data`: fields of `base` (default `DEFAULT_SPACE`, or the space named by ``"base"``:
        ``"default"``/``"cifar"``) replaced by the fields given; `SpaceError` naming the field for anything else."""
        if not isinstance(data, dict):
            raise SpaceError(f"space: must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        base_name = data.pop("base", None)
        if base_name is not None and base_name not in SPACES:
            raise SpaceError(f"space.base: must be one of {', '.join(SPACES)}; got {base_name!r}")
        base = SPACES[base_name] if base_name is not None else (base or DEFAULT_SPACE)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise SpaceError(f"space: unknown field(s) {', '.join(unknown)}; allowed: base, {', '.join(fields)}")
        values = {name: _space_value(name, value, getattr(base, name)) for name, value in data.items()}
        space = dataclasses.replace(base, **values)
        space.validate()
        return space

    def validate(self) -> None:
        """`SpaceError` unless every choice is one the specs accept and every sampled point is a valid `ArchSpec`."""
        _choices_within(self.mixers, tuple(mixer_types()), "mixers")
        _choices_within(self.downsamples, ("conv2x2", "shvit", "qna"), "downsamples")
        _choices_within(self.stem_kinds, ("patch", "conv"), "stem_kinds")
        _choices_within(self.stem_strides, (4, 8, 16), "stem_strides")
        _choices_within(self.conv_variants, ("convnext", "repvit"), "conv_variants")
        if not all(isinstance(n, int) and 1 <= n <= 8 for n in self.num_stages):
            raise SpaceError(f"space.num_stages: stage counts must be 1 to 8, got {list(self.num_stages)}")
        for name in ("widths", "depths"):
            if len(getattr(self, name)) < max(self.num_stages):
                raise SpaceError(f"space.{name}: needs a choice list for each of {max(self.num_stages)} stages, "
                                 f"got {len(getattr(self, name))}")
        if not (isinstance(self.proxy_resolution, int) and MIN_RESOLUTION <= self.proxy_resolution <= MAX_RESOLUTION):
            raise SpaceError(f"space.proxy_resolution: must be an integer in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], "
                             f"got {self.proxy_resolution!r}")
        import optuna  # every choice combination reaches the spec's validation through a sample

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(64):
            trial = study.ask()
            try:
                sample_arch(trial, self)
            except SpecError as error:
                raise SpaceError(f"space: it can produce an invalid architecture: {error}") from None
            study.tell(trial, 0.0)


def _space_value(name: str, value: Any, current: Any) -> Any:
    """`value` of field `name` as the dataclass holds it (tuples of the type of `current`'s items)."""
    field = f"space.{name}"
    if isinstance(current, tuple):
        if not isinstance(value, list) or not value:
            raise SpaceError(f"{field}: must be a non-empty list, got {value!r:.80}")
        if current and isinstance(current[0], tuple):
            return tuple(_space_value(f"{name}[{i}]", item, current[0]) for i, item in enumerate(value))
        kind = type(current[0]) if current else str
        if kind is float:
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            value = [float(v) for v in value] if ok else value
        else:
            ok = all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
        if not ok:
            raise SpaceError(f"{field}: every choice must be a {kind.__name__}, got {value!r:.80}")
        if len(set(value)) != len(value):
            raise SpaceError(f"{field}: choices must be distinct, got {value!r:.80}")
        return tuple(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpaceError(f"{field}: must be a positive integer, got {value!r}")
    return value


def _choices_within(values: tuple, allowed: tuple, name: str) -> None:
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise SpaceError(f"space.{name}: unknown choice(s) {unknown}; allowed: {list(allowed)}")


DEFAULT_SPACE = SearchSpace()
# Small networks for 32x32 images (CIFAR): low strides, narrow stages; the data proxies see the images as they are.
CIFAR_SPACE = SearchSpace(stem_strides=(4,), widths=((32, 64), (64, 96, 128), (128, 192), (192, 256)),
                          depths=((1, 2), (1, 2), (1, 2, 3), (1, 2)), window_sizes=(4, 8), stripe_widths=(1, 2, 4),
                          num_classes=10, proxy_resolution=32)
SPACES: dict[str, SearchSpace] = {"default": DEFAULT_SPACE, "cifar": CIFAR_SPACE}


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A named space (`SPACES`: ``default``, ``cifar``) or one a user declares in a JSON file (`SearchSpace.from_dict`:
    any fields, over ``"base"``); `SpaceError` with one line otherwise."""
    if isinstance(name_or_path, str) and name_or_path in SPACES:
        return SPACES[name_or_path]
    path = Path(name_or_path)
    if not path.suffix == ".json":
        raise SpaceError(f"space {str(name_or_path)!r}: name one of {', '.join(SPACES)} or a .json file declaring one")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpaceError(f"cannot read space file {path}: {getattr(error, 'strerror', None) or error}") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise SpaceError(f"{path}: not valid JSON ({str(error).splitlines()[0][:120]})") from None
    try:
        return SearchSpace.from_dict(data)
    except SpaceError as error:
        raise SpaceError(f"{path}: {error}") from None


def heads_for(width: int, head_dim: int, even: bool = False) -> int:
    """Number of heads of `head_dim` channels on `width`; with `even` (stripes), an odd count is doubled (the head
    dim halved) so that both stripe directions get half."""
    heads = width // head_dim
    return heads * 2 if even and heads % 2 else heads


def partial_dim_for(width: int, ratio: float) -> int:
    """SHViT's attended channels for a `ratio` of `width`, at least width // 8."""
    return max(width // 8, int(width * ratio))


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
        mixer_kind = trial.suggest_categorical(f"{prefix}_mixer", space.mixers)
        mixer = mixer_entry(mixer_kind).sample(trial, f"{prefix}_{mixer_kind}", width, space)
        if i == 0:
            downsample = DownsampleSpec("none")
        else:
            downsample = space.downsample(trial.suggest_categorical(f"{prefix}_downsample", space.downsamples), width)
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
