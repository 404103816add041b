"""`ArchSpec`: a point of the search space, as frozen typed dataclasses, with validation and versioned JSON.

An architecture is a stem, a list of stages and a head. Each stage starts with a transition (a downsampling
layer, or a 1x1 projection when only the width changes) followed by `depth` repeats of its mixer's block.
Validation happens on construction, so an `ArchSpec` that exists is valid; errors are `SpecError` naming the
field (``stages[2].mixer.num_heads``) and what would be accepted.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Union

from common.errors import UserFacingError

__all__ = [
    "SCHEMA_VERSION", "SpecError", "ConvMixer", "WindowMixer", "LinearMixer", "SingleHeadMixer", "StripMixer",
    "QnAMixer", "MixerSpec", "MIXER_TYPES", "mixer_types", "MIN_RESOLUTION", "MAX_RESOLUTION", "StemSpec",
    "DownsampleSpec", "StageSpec", "HeadSpec", "ArchSpec",
]

SCHEMA_VERSION = 1
MAX_WINDOW = 32  # larger windows are global attention in disguise at any sensible resolution
MAX_WIDTH = 4096
MAX_DEPTH = 64


class SpecError(UserFacingError, ValueError):
    """An architecture specification is invalid; the message names the field and the accepted values."""


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise SpecError(f"{field}: {message}")


def _check_int(value: Any, field: str, low: int, high: int) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool), field, f"must be an integer, got {value!r}")
    _require(low <= value <= high, field, f"must be in [{low}, {high}], got {value}")


def _check_choice(value: Any, field: str, choices: tuple) -> None:
    _require(value in choices, field, f"must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _check_heads(num_heads: Any, width: int, field: str) -> None:
    _check_int(num_heads, field, 1, width)
    _require(width % num_heads == 0, field, f"width {width} is not divisible by {num_heads} heads")


# ---------------------------------------------------------------------------------------------------------- mixers
@dataclass(frozen=True)
class ConvMixer:
    """ConvNeXt block (depthwise k x k, LayerNorm, MLP) or RepViT block (BN'd depthwise 3x3, BN FFN)."""
    kind: ClassVar[str] = "conv"
    kernel_size: int = 7
    variant: str = "convnext"  # "convnext" | "repvit"

    def validate(self, width: int, field: str) -> None:
        _check_choice(self.variant, f"{field}.variant", ("convnext", "repvit"))
        _check_choice(self.kernel_size, f"{field}.kernel_size", (3, 5, 7) if self.variant == "convnext" else (3,))


@dataclass(frozen=True)
class WindowMixer:
    """Swin block: windowed multi-head attention with relative position bias; shift on every second block."""
    kind: ClassVar[str] = "window"
    num_heads: int = 4
    window_size: int = 7
    shift: bool = True

    def validate(self, width: int, field: str) -> None:
        _check_heads(self.num_heads, width, f"{field}.num_heads")
        _check_int(self.window_size, f"{field}.window_size", 2, MAX_WINDOW)
        _require(isinstance(self.shift, bool), f"{field}.shift", f"must be true or false, got {self.shift!r}")


@dataclass(frozen=True)
class LinearMixer:
    """L2ViT: linear global attention + local concentration module; with `alternate`, even blocks are
    L2ViT's local window attention (no shift, no bias) and odd blocks linear attention."""
    kind: ClassVar[str] = "linear"
    num_heads: int = 4
    alternate: bool = True
    window_size: int = 7

    def validate(self, width: int, field: str) -> None:
        _check_heads(self.num_heads, width, f"{field}.num_heads")
        _require(isinstance(self.alternate, bool), f"{field}.alternate", f"must be true or false, got "
                                                                          f"{self.alternate!r}")
        _check_int(self.window_size, f"{field}.window_size", 2, MAX_WINDOW)


@dataclass(frozen=True)
class SingleHeadMixer:
    """SHViT block: depthwise 3x3, single-head attention on `partial_dim` of the channels, BN FFN."""
    kind: ClassVar[str] = "single_head"
    partial_dim: int = 32
    qk_dim: int = 16

    def validate(self, width: int, field: str) -> None:
        low, high = max(1, width // 8), max(1, width // 2)
        _check_int(self.partial_dim, f"{field}.partial_dim", low, high)
        _check_int(self.qk_dim, f"{field}.qk_dim", 8, 32)


@dataclass(frozen=True)
class StripMixer:
    """CSWin block: half the heads attend in vertical stripes, half in horizontal ones, plus LePE."""
    kind: ClassVar[str] = "strip"
    num_heads: int = 4
    stripe_width: int = 7

    def validate(self, width: int, field: str) -> None:
        _check_heads(self.num_heads, width, f"{field}.num_heads")
        _require(self.num_heads % 2 == 0, f"{field}.num_heads", f"must be even (half per stripe direction), "
                                                                  f"got {self.num_heads}")
        _check_int(self.stripe_width, f"{field}.stripe_width", 1, MAX_WINDOW)


@dataclass(frozen=True)
class QnAMixer:
    """QnA block: learned queries attending over overlapping k x k windows, summed over queries."""
    kind: ClassVar[str] = "qna"
    num_heads: int = 8
    kernel_size: int = 3
    num_queries: int = 2

    def validate(self, width: int, field: str) -> None:
        _check_heads(self.num_heads, width, f"{field}.num_heads")
        _check_choice(self.kernel_size, f"{field}.kernel_size", (3, 5, 7))
        _check_int(self.num_queries, f"{field}.num_queries", 1, 8)


MixerSpec = Union[ConvMixer, WindowMixer, LinearMixer, SingleHeadMixer, StripMixer, QnAMixer]
MIXER_TYPES: dict[str, type] = {}  # kind -> spec class, filled by search_spaces.mixer_registry.register_mixer
# Input sizes the backbones are built for: below 16 px every stage map is 1x1 padding; above 2048 px one image's
# activations at stride 4 pass a gigabyte per channel group (a typo, not a backbone).
MIN_RESOLUTION, MAX_RESOLUTION = 16, 2048


def mixer_types() -> dict[str, type]:
    """`MIXER_TYPES` with the built-in mixers and users' plug-ins registered: the first call imports
    `search_spaces.mixers`, which registers them, so reading a spec needs no import before it."""
    importlib.import_module("search_spaces.mixers")  # registers them on its first import; then a dict lookup
    return MIXER_TYPES


# ------------------------------------------------------------------------------------------- stem, stages, head
@dataclass(frozen=True)
class StemSpec:
    """Stem: ``patch`` (one stride x stride conv + LayerNorm, Swin/ConvNeXt) or ``conv`` (log2(stride) 3x3
    stride-2 conv-BN layers with ReLU between them, SHViT/L2ViT)."""
    stride: int = 4
    width: int = 64
    kind: str = "patch"

    def validate(self, field: str) -> None:
        _check_choice(self.kind, f"{field}.kind", ("patch", "conv"))
        _check_choice(self.stride, f"{field}.stride", (4, 8, 16))
        _check_int(self.width, f"{field}.width", 8, MAX_WIDTH)


@dataclass(frozen=True)
class DownsampleSpec:
    """Stride-2 transition at the start of a stage.

    ``none``: keep the resolution (a 1x1 projection if the width changes); ``conv2x2``: norm + 2x2 stride-2 conv
    (Swin patch merging, ConvNeXt, L2ViT); ``shvit``: SHViT's patch merging (1x1 expand x4, depthwise 3x3 s2,
    squeeze-excite, 1x1) between depthwise+FFN residuals; ``qna``: a stride-2 QnA layer with a 1x1 stride-2 skip
    (QnA-ViT), `num_heads` of its own.
    """
    kind: str = "conv2x2"
    num_heads: int = 0  # qna only

    def validate(self, width: int, field: str) -> None:
        _check_choice(self.kind, f"{field}.kind", ("none", "conv2x2", "shvit", "qna"))
        if self.kind == "qna":
            _check_heads(self.num_heads, width, f"{field}.num_heads")
        else:
            _require(self.num_heads == 0, f"{field}.num_heads", f"is only for kind 'qna'; got {self.num_heads}")

    @property
    def stride(self) -> int:
        return 1 if self.kind == "none" else 2


@dataclass(frozen=True)
class StageSpec:
    mixer: MixerSpec
    width: int
    depth: int
    mlp_ratio: float = 4.0
    downsample: DownsampleSpec = DownsampleSpec("none")

    def validate(self, field: str) -> None:
        _check_int(self.width, f"{field}.width", 8, MAX_WIDTH)
        _check_int(self.depth, f"{field}.depth", 1, MAX_DEPTH)
        _require(isinstance(self.mlp_ratio, (int, float)) and not isinstance(self.mlp_ratio, bool)
                 and 0.5 <= self.mlp_ratio <= 8, f"{field}.mlp_ratio", f"must be a number in [0.5, 8], got "
                                                                       f"{self.mlp_ratio!r}")
        _require(isinstance(self.mixer, tuple(mixer_types().values())), f"{field}.mixer",
                 f"must be one of the mixer specs {sorted(MIXER_TYPES)}, got {type(self.mixer).__name__}")
        self.mixer.validate(self.width, f"{field}.mixer")
        _require(isinstance(self.downsample, DownsampleSpec), f"{field}.downsample",
                 f"must be a DownsampleSpec, got {type(self.downsample).__name__}")
        self.downsample.validate(self.width, f"{field}.downsample")

    @property
    def hidden_width(self) -> int:
        """Width of the MLP's hidden layer."""
        return mlp_hidden_width(self.width, self.mlp_ratio)


@dataclass(frozen=True)
class HeadSpec:
    """Classifier head: global average pool -> LayerNorm -> Linear(num_classes) (0 classes: features only)."""
    num_classes: int = 1000

    def validate(self, field: str) -> None:
        _check_int(self.num_classes, f"{field}.num_classes", 0, 1_000_000)


@dataclass(frozen=True)
class ArchSpec:
    """A backbone: stem, stages (tuple of `StageSpec`), head. Validated on construction; use `from_json`/`to_json`."""
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec = HeadSpec()
    name: str = ""

    def __post_init__(self) -> None:
        _require(isinstance(self.stem, StemSpec), "stem", f"must be a StemSpec, got {type(self.stem).__name__}")
        self.stem.validate("stem")
        _require(isinstance(self.stages, tuple) and 1 <= len(self.stages) <= 8, "stages",
                 f"must be a tuple of 1 to 8 StageSpec, got {self.stages!r:.80}")
        for i, stage in enumerate(self.stages):
            _require(isinstance(stage, StageSpec), f"stages[{i}]", f"must be a StageSpec, got {type(stage).__name__}")
            stage.validate(f"stages[{i}]")
        _require(isinstance(self.head, HeadSpec), "head", f"must be a HeadSpec, got {type(self.head).__name__}")
        self.head.validate("head")
        _require(isinstance(self.name, str), "name", f"must be a string, got {self.name!r}")
        _require(math.prod(s.downsample.stride for s in self.stages) * self.stem.stride <= 128, "stages",
                 "total stride over 128 leaves nothing of a 224x224 input")

    # ----------------------------------------------------------------------------------------------- properties
    @property
    def reductions(self) -> tuple[int, ...]:
        """Stride of each stage's output relative to the input image."""
        out, stride = [], self.stem.stride
        for stage in self.stages:
            stride *= stage.downsample.stride
            out.append(stride)
        return tuple(out)

    def stage_resolutions(self, height: int, width: int) -> tuple[tuple[int, int], ...]:
        """(H, W) of each stage's feature map for an input of `height` x `width` (ceil division, as the convs)."""
        return tuple((-(-height // r), -(-width // r)) for r in self.reductions)

    # ---------------------------------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        stages = []
        for stage in self.stages:
            entry = dataclasses.asdict(stage)
            entry["mixer"] = {"kind": stage.mixer.kind, **dataclasses.asdict(stage.mixer)}
            stages.append(entry)
        return {"schema_version": SCHEMA_VERSION, "name": self.name, "stem": dataclasses.asdict(self.stem),
                "stages": stages, "head": dataclasses.asdict(self.head)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any) -> ArchSpec:
        _require(isinstance(data, dict), "spec", f"must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        _require(version == SCHEMA_VERSION, "schema_version", f"must be {SCHEMA_VERSION}, got {version!r}")
        _check_keys(data, {"schema_version", "name", "stem", "stages", "head"}, "spec")
        stages_data = data.get("stages")
        _require(isinstance(stages_data, list), "stages", f"must be a list, got {type(stages_data).__name__}")
        stages = tuple(_stage_from_dict(entry, f"stages[{i}]") for i, entry in enumerate(stages_data))
        return cls(stem=_build(StemSpec, data.get("stem"), "stem"), stages=stages,
                   head=_build(HeadSpec, data.get("head", {}), "head"), name=data.get("name", ""))

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise SpecError(f"spec: not valid JSON ({error})") from None
        except RecursionError:
            raise SpecError("spec: JSON nested too deeply to be an ArchSpec") from None
        try:
            return cls.from_dict(data)
        except RecursionError:
            raise SpecError("spec: nested too deeply to be an ArchSpec") from None

    # ---------------------------------------------------------------------------------------------- identity
    def canonical(self) -> str:
        """A canonical string of the architecture (name excluded): equal for equal networks, for de-duplication."""
        data = self.to_dict()
        del data["name"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def digest(self, length: int = 12) -> str:
        """Short hex hash of `canonical()`."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:length]


def mlp_hidden_width(width: int, mlp_ratio: float) -> int:
    """Hidden width of an MLP of ratio `mlp_ratio` on `width` channels (every block and the QnA downsampling)."""
    return max(1, int(round(width * mlp_ratio)))


def _check_keys(data: dict, allowed: set[str], field: str) -> None:
    unknown = sorted(set(data) - allowed)
    _require(not unknown, field, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _build(spec_type: type, data: Any, field: str) -> Any:
    _require(isinstance(data, dict), field, f"must be a JSON object, got {type(data).__name__}")
    _check_keys(data, {f.name for f in dataclasses.fields(spec_type)}, field)
    return spec_type(**data)


def _stage_from_dict(data: Any, field: str) -> StageSpec:
    _require(isinstance(data, dict), field, f"must be a JSON object, got {type(data).__name__}")
    _check_keys(data, {f.name for f in dataclasses.fields(StageSpec)}, field)
    mixer_data = data.get("mixer")
    _require(isinstance(mixer_data, dict), f"{field}.mixer", "must be a JSON object with a 'kind'")
    mixer_data = dict(mixer_data)
    kind = mixer_data.pop("kind", None)
    _check_choice(kind, f"{field}.mixer.kind", tuple(mixer_types()))
    mixer = _build(MIXER_TYPES[kind], mixer_data, f"{field}.mixer")
    downsample = _build(DownsampleSpec, data.get("downsample", {"kind": "none"}), f"{field}.downsample")
    fields = {key: value for key, value in data.items() if key not in ("mixer", "downsample")}
    _require("width" in fields and "depth" in fields, field, "needs 'width' and 'depth'")
    return StageSpec(mixer=mixer, downsample=downsample, **fields)
