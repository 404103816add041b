"""ArchSpec: JSON round-trip, canonical identity, and validation errors that name the bad field."""
from __future__ import annotations

import dataclasses
import json

import pytest

from search_spaces import (
    REFERENCE_ARCHS, TINY_ARCHS, ArchSpec, ConvMixer, DownsampleSpec, HeadSpec, SingleHeadMixer, SpecError,
    StageSpec, StemSpec, StripMixer, WindowMixer,
)

ALL_NAMED = {**REFERENCE_ARCHS, **TINY_ARCHS}


@pytest.mark.parametrize("name", sorted(ALL_NAMED))
def test_json_round_trip_gives_equal_spec(name: str) -> None:
    spec = ALL_NAMED[name]
    text = spec.to_json()
    assert json.loads(text)["schema_version"] == 1
    assert ArchSpec.from_json(text) == spec
    assert ArchSpec.from_json(text).canonical() == spec.canonical()


def test_canonical_ignores_name_and_separates_architectures() -> None:
    swin = REFERENCE_ARCHS["swin_t_like"]
    renamed = dataclasses.replace(swin, name="other")
    assert renamed.canonical() == swin.canonical() and renamed.digest() == swin.digest()
    digests = {spec.digest() for spec in ALL_NAMED.values()}
    assert len(digests) == len(ALL_NAMED)


def test_reductions_and_resolutions_use_ceil_division() -> None:
    spec = REFERENCE_ARCHS["swin_t_like"]
    assert spec.reductions == (4, 8, 16, 32)
    assert spec.stage_resolutions(225, 97) == ((57, 25), (29, 13), (15, 7), (8, 4))


def _mutate(path: list, value) -> str:
    """JSON of the Swin-T-like spec with one field replaced (path of keys/indices)."""
    data = REFERENCE_ARCHS["swin_t_like"].to_dict()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(data)


@pytest.mark.parametrize("path, value, expected", [
    (["stages", 1, "mixer", "kind"], "fourier", r"stages\[1\]\.mixer\.kind: must be one of"),
    (["stages", 2, "mixer", "num_heads"], 5, r"stages\[2\]\.mixer\.num_heads: width 384 is not divisible by 5"),
    (["stages", 0, "mixer", "window_size"], 512, r"stages\[0\]\.mixer\.window_size: must be in \[2, 32\]"),
    (["stages", 3, "depth"], -1, r"stages\[3\]\.depth: must be in \[1, 64\], got -1"),
    (["schema_version"], 99, r"schema_version: must be 1, got 99"),
    (["stem", "stride"], 3, r"stem\.stride: must be one of 4, 8, 16"),
    (["stages", 1, "mlp_ratio"], "four", r"stages\[1\]\.mlp_ratio: must be a number"),
    (["stages", 1, "width"], 96.5, r"stages\[1\]\.width: must be an integer"),
    (["stages", 1, "downsample", "kind"], "maxpool", r"stages\[1\]\.downsample\.kind: must be one of"),
    (["stages", 1, "mixer", "shift"], "yes", r"stages\[1\]\.mixer\.shift: must be true or false"),
    (["head", "num_classes"], -3, r"head\.num_classes: must be in \[0, 1000000\]"),
    (["stages", 0, "colour"], "red", r"stages\[0\]: unknown field\(s\) colour"),
])
def test_bad_field_raises_spec_error_naming_it(path: list, value, expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        ArchSpec.from_json(_mutate(path, value))


def test_not_json_and_not_object_raise_spec_error() -> None:
    with pytest.raises(SpecError, match="not valid JSON"):
        ArchSpec.from_json("{stages: ")
    with pytest.raises(SpecError, match="must be a JSON object"):
        ArchSpec.from_json("[1, 2]")


@pytest.mark.parametrize("make, expected", [
    (lambda: StageSpec(StripMixer(num_heads=3, stripe_width=2), 96, 2), r"num_heads: must be even"),
    (lambda: StageSpec(SingleHeadMixer(partial_dim=100, qk_dim=16), 128, 2), r"partial_dim: must be in \[16, 64\]"),
    (lambda: StageSpec(ConvMixer(kernel_size=5, variant="repvit"), 64, 2), r"kernel_size: must be one of 3"),
    (lambda: StageSpec(WindowMixer(2, 7), 64, 2, downsample=DownsampleSpec("qna")), r"downsample\.num_heads"),
    (lambda: StageSpec(WindowMixer(2, 7), 64, 2, downsample=DownsampleSpec("conv2x2", 4)), r"only for kind 'qna'"),
])
def test_invalid_stage_raises_when_the_spec_is_built(make, expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        ArchSpec(stem=StemSpec(), stages=(make(),), head=HeadSpec(10))


def test_empty_and_too_strided_specs_are_rejected() -> None:
    with pytest.raises(SpecError, match="stages: must be a tuple of 1 to 8"):
        ArchSpec(stem=StemSpec(), stages=())
    deep = tuple(StageSpec(ConvMixer(3), 32, 1, downsample=DownsampleSpec("conv2x2")) for _ in range(4))
    with pytest.raises(SpecError, match="total stride over 128"):
        ArchSpec(stem=StemSpec(stride=16), stages=deep)
