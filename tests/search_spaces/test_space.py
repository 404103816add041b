"""The space: sampled points are valid, round-trip through JSON, build, and cover every choice."""
from __future__ import annotations

import collections

import optuna
import pytest
import torch

from search_spaces import CIFAR_SPACE, DEFAULT_SPACE, ArchSpec, build_model, sample_arch, sample_archs

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
