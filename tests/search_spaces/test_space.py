"""The space: sampled points are valid, round-trip through JSON, build, and cover every choice."""
from __future__ import annotations

import collections
import json
import re

import optuna
import pytest
import torch

from search_spaces import (
    CIFAR_SPACE, DEFAULT_SPACE, SPACES, ArchSpec, SearchSpace, SpaceError, build_model, load_space, sample_arch,
    sample_archs,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sample(space, count: int, seed: int) -> list[ArchSpec]:
    return sample_archs(count, seed, space)


@pytest.fixture(scope="module")
def default_specs() -> list[ArchSpec]:
    return _sample(DEFAULT_SPACE, 200, seed=0)


def test_200_sampled_specs_validate_round_trip_and_build(default_specs: list[ArchSpec]) -> None:
    for spec in default_specs:
        again = ArchSpec.from_json(spec.to_json())  # validates on construction
        assert again == spec and again.digest() == spec.digest()
        with torch.device("meta"):  # builds every module without allocating weights
            model = build_model(spec)
        assert [f["num_chs"] for f in model.feature_info] == [s.width for s in spec.stages]


def test_sampling_covers_every_mixer_and_transition(default_specs: list[ArchSpec]) -> None:
    mixers = collections.Counter(stage.mixer.kind for spec in default_specs for stage in spec.stages)
    downsamples = collections.Counter(stage.downsample.kind for spec in default_specs for stage in spec.stages)
    assert set(mixers) == set(DEFAULT_SPACE.mixers)
    assert set(downsamples) == {"none", *DEFAULT_SPACE.downsamples}
    assert {spec.stem.stride for spec in default_specs} == set(DEFAULT_SPACE.stem_strides)
    assert len({spec.digest() for spec in default_specs}) > 190  # the space is large: few repeats


def test_sampled_networks_run_forward(default_specs: list[ArchSpec]) -> None:
    torch.manual_seed(0)
    for spec in default_specs[:12]:
        model = build_model(spec, num_classes=5).eval()
        with torch.no_grad():
            logits = model(torch.randn(1, 3, 64, 64))
        assert logits.shape == (1, 5) and torch.isfinite(logits).all(), spec.to_json(indent=None)


def test_cifar_space_networks_train_one_step() -> None:
    torch.manual_seed(0)
    for spec in _sample(CIFAR_SPACE, 8, seed=1):
        assert spec.head.num_classes == 10
        model = build_model(spec)
        loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 3, 9, 1]))
        loss.backward()
        assert torch.isfinite(loss)


def test_same_seed_gives_same_specs() -> None:
    assert [s.digest() for s in _sample(DEFAULT_SPACE, 5, seed=7)] == [s.digest() for s in _sample(DEFAULT_SPACE, 5, 7)]


def test_parameter_names_have_fixed_choices_across_trials() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    distributions: dict[str, object] = {}
    for _ in range(60):
        trial = study.ask()
        sample_arch(trial, DEFAULT_SPACE)
        study.tell(trial, 0.0)
        for name, dist in trial.distributions.items():
            assert distributions.setdefault(name, dist) == dist, name


# ------------------------------------------------------------------------------------------ declared spaces
def test_named_spaces_round_trip_through_their_dicts() -> None:
    for name, space in SPACES.items():
        assert load_space(name) is space
        assert SearchSpace.from_dict(space.to_dict()) == space
    assert CIFAR_SPACE.proxy_resolution == 32 and DEFAULT_SPACE.proxy_resolution == 64


def test_a_declared_space_overrides_its_base_and_samples_only_its_choices(tmp_path) -> None:
    path = tmp_path / "two-mixers.json"
    path.write_text(json.dumps({"base": "cifar", "mixers": ["conv", "window"], "num_stages": [3],
                                "mlp_ratios": [3, 2.5]}))
    space = load_space(path)
    assert space.num_classes == 10 and space.widths == CIFAR_SPACE.widths  # from the base
    assert space.mlp_ratios == (3.0, 2.5) and space.num_stages == (3,)
    specs = sample_archs(30, seed=3, space=space)
    assert {len(s.stages) for s in specs} == {3}
    assert {s.mixer.kind for spec in specs for s in spec.stages} <= {"conv", "window"}


@pytest.mark.parametrize("data, field", [
    ({"mixers": ["conv", "transformer"]}, "space.mixers"),
    ({"widths": [[32, 64]], "num_stages": [3]}, "space.widths"),
    ({"depths": "2"}, "space.depths"),
    ({"num_stages": [3, 3]}, "space.num_stages"),
    ({"window_sizes": [7, True]}, "space.window_sizes"),
    ({"base": "imagenet"}, "space.base"),
    ({"colour": ["red"]}, "unknown field(s) colour"),
    ({"proxy_resolution": 4}, "space.proxy_resolution"),
])
def test_a_bad_space_is_refused_naming_its_field(data: dict, field: str) -> None:
    with pytest.raises(SpaceError, match=re.escape(field)):
        SearchSpace.from_dict(data)


def test_unreadable_space_files_are_one_line(tmp_path) -> None:
    for name, content in (("bad.json", b"{not json"), ("latin.json", b"\xff\xfe{}"), ("list.json", b"[1, 2]")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SpaceError) as caught:
            load_space(tmp_path / name)
        assert "\n" not in str(caught.value) and name in str(caught.value)
    with pytest.raises(SpaceError, match="name one of default, cifar"):
        load_space("imagenet")
