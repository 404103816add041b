"""Accuracy proxies: finite on every tiny, sampled and reference network; deterministic; measuring what they claim;
failing with ProxyError where they must; and leaving the caller's RNG state alone."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas import proxies
from nas.proxies import scoring
from nas.proxies import (DATA_FREE, LOOKUPS, PROXIES, RANKER_FEATURES, ProxyError, TrainRecipe, az_nas_components,
                         lookup_score, score, short_train)
from nas.ranker import load_ranker
from search_spaces import (
    CIFAR_SPACE, REFERENCE_ARCHS, TINY_ARCHS, ArchSpec, build_model, count_flops, count_params, sample_archs,
)

ROOT = Path(__file__).resolve().parents[2]
CIFAR_SUBSET = ROOT.parent / "shared" / "data" / "cifar10_subset.npz"
# the ranker is meco + AZ-NAS + a lookup: its finiteness over the space is the benchmark's 54 networks, its value
# test_the_ranker_scores_its_features_as_the_single_proxies_compute_them
ZERO_COST = [name for name in PROXIES if name not in ("short_train", "ranker")]
DATA_PROXIES = [name for name, proxy in PROXIES.items() if proxy.needs_data]


def _batch(size: int, resolution: int = 32, num_classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(size, 3, resolution, resolution, generator=generator),
            torch.randint(0, num_classes, (size,), generator=generator))


def _uint8_split(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (size, 32, 32, 3), dtype=torch.uint8, generator=generator),
            torch.randint(0, 10, (size,), generator=generator))


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return _batch(32)


@pytest.fixture(scope="module")
def random_splits() -> dict:
    return dict(train_data=_uint8_split(256, seed=1), test_data=_uint8_split(64, seed=2))


@pytest.fixture(scope="module")
def cifar() -> dict:
    if not CIFAR_SUBSET.exists():
        pytest.skip(f"CIFAR-10 subset not found at {CIFAR_SUBSET}")
    with np.load(CIFAR_SUBSET) as data:
        return dict(train_data=(torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])),
                    test_data=(torch.from_numpy(data["x_test"]), torch.from_numpy(data["y_test"])))


def _score_all(name: str, spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, splits: dict | None = None,
               **options) -> proxies.ProxyResult:
    if name == "short_train":
        return score(name, spec, steps=20, **splits, **options)
    return score(name, spec, images, labels, **options)


def _wider(spec: ArchSpec) -> ArchSpec:
    """The same network with every width doubled (head counts still divide the widths)."""
    return dataclasses.replace(spec, stem=dataclasses.replace(spec.stem, width=2 * spec.stem.width),
                               stages=tuple(dataclasses.replace(s, width=2 * s.width) for s in spec.stages))


def _non_finite(names: list[str], specs: list[ArchSpec], images: torch.Tensor, labels: torch.Tensor,
                resolution: int = 32) -> list[str]:
    failures = []
    for spec in specs:
        for name in names:
            try:
                value = score(name, spec, images, labels, resolution=resolution).value
            except ProxyError as error:
                value = str(error)
            if not isinstance(value, float) or not math.isfinite(value):
                failures.append(f"{name}: {value} on {spec.to_json(indent=None)}")
    return failures


# ------------------------------------------------------------------------------------------------- finiteness
@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("name", PROXIES)
def test_every_proxy_is_finite_on_every_tiny_arch(name: str, arch: str, batch, random_splits) -> None:
    result = _score_all(name, TINY_ARCHS[arch], *batch, random_splits)
    assert result.name == name and math.isfinite(result.value) and result.seconds >= 0
    if name == "short_train":
        assert 0.0 <= result.value <= 1.0 and result.details["steps"] == 20


@pytest.mark.slow
def test_zero_cost_proxies_are_finite_on_48_sampled_cifar_specs() -> None:  # about 45 s on one CPU thread
    assert not _non_finite(ZERO_COST, sample_archs(48, seed=1, space=CIFAR_SPACE), *_batch(16))


@pytest.mark.slow
def test_zero_cost_proxies_are_finite_on_every_reference_arch_at_224() -> None:
    images, labels = _batch(4, resolution=224, num_classes=1000)  # the fewest images ZiCo takes (2 parts of 2)
    assert not _non_finite(ZERO_COST, list(REFERENCE_ARCHS.values()), images, labels, resolution=224)


# ------------------------------------------------------------------------------------------------ lookups
LOOKUP_CASES = [(name, spec, 224) for name, spec in REFERENCE_ARCHS.items()] + [
    (f"cifar_{i}", spec, 32) for i, spec in enumerate(sample_archs(50, seed=11, space=CIFAR_SPACE))]


@pytest.mark.parametrize("name, spec, resolution", LOOKUP_CASES, ids=[case[0] for case in LOOKUP_CASES])
def test_lookup_proxies_equal_fvcore_on_the_built_model(name: str, spec: ArchSpec, resolution: int) -> None:
    """params and flops summed from the shipped block counts, against the built network (within 1%)."""
    assert set(LOOKUPS) == {"params", "flops"}
    assert lookup_score("params", spec, resolution) == pytest.approx(count_params(spec), rel=0.01)
    assert lookup_score("flops", spec, resolution) == pytest.approx(count_flops(spec, resolution), rel=0.01)


def test_a_non_lookup_proxy_is_refused_by_lookup_score() -> None:
    with pytest.raises(ProxyError, match="not a lookup proxy"):
        lookup_score("synflow", TINY_ARCHS["tiny_conv"], 32)


# ------------------------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("name", ["synflow", *DATA_PROXIES])
def test_same_seed_same_value_other_seed_other_value(name: str, batch, random_splits) -> None:
    spec = TINY_ARCHS["tiny_conv"]
    first, again, other = (_score_all(name, spec, *batch, random_splits, seed=seed) for seed in (0, 0, 1))
    assert first.value == again.value and first.details == again.details
    if name == "short_train":  # accuracy on 64 random test images may tie; the loss does not
        assert first.details["final_loss"] != other.details["final_loss"]
    else:
        assert first.value != other.value


@pytest.mark.parametrize("name", ["params", "flops"])
def test_baselines_do_not_depend_on_the_seed(name: str) -> None:
    spec = TINY_ARCHS["tiny_window"]
    assert score(name, spec, seed=0).value == score(name, spec, seed=5).value > 0


def test_scoring_leaves_the_global_rng_state_alone(batch, random_splits) -> None:
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    values = [_score_all(name, TINY_ARCHS["tiny_qna"], *batch, random_splits).value for name in PROXIES]
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)  # a different caller state gives the same scores
    assert [_score_all(name, TINY_ARCHS["tiny_qna"], *batch, random_splits).value for name in PROXIES] == values


# ------------------------------------------------------------------------------------- what the proxies measure
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_params_and_synflow_grow_with_width(arch: str) -> None:
    spec = TINY_ARCHS[arch]
    for name in ("params", "synflow"):
        assert score(name, _wider(spec)).value > score(name, spec).value, name


def test_naswot_is_at_its_minimum_when_every_input_shares_one_code(batch) -> None:
    images, labels = batch
    spec = TINY_ARCHS["tiny_conv"]
    same = score("naswot", spec, images[:1].expand_as(images).contiguous(), labels)
    distinct = score("naswot", spec, images, labels)
    b, units = same.details["batch"], same.details["units"]
    assert units == distinct.details["units"] > 0
    # K_H = N_A * ones: logdet(K_H + I) = log(B * N_A + 1), the least any B x B kernel with diagonal N_A reaches.
    assert same.value == pytest.approx(math.log(b * units + 1), rel=1e-9)
    assert same.value < distinct.value <= b * math.log(units + 1)  # Hadamard: det <= product of the diagonal


def _sign_patterns(patterns: torch.Tensor, resolution: int) -> torch.Tensor:
    """Images ``[B, 3, R, R]`` whose flattened unit u is +1 where ``patterns[u, b]`` and -1 elsewhere."""
    units, batch = patterns.shape
    values = torch.where(patterns.T, 1.0, -1.0)  # [B, units]
    return torch.cat([values, -torch.ones(batch, 3 * resolution**2 - units)], dim=1).reshape(batch, 3, resolution,
                                                                                             resolution)


@pytest.mark.parametrize("batch_size", [5, 70])  # 70: patterns span two packed words
def test_swap_counts_distinct_unit_patterns_over_the_batch(batch_size: int) -> None:
    bits = torch.arange(batch_size).clamp(max=62)
    patterns = ((torch.arange(1, 10)[:, None] >> bits) & 1).bool()  # unit u: the bits of u + 1, all distinct
    patterns[3] = patterns[1]  # units 1, 3 and 6 share a pattern
    patterns[6] = patterns[1]
    patterns[7] = patterns[8].clone()
    patterns[7, -1] = ~patterns[8, -1]  # differ only at the last input
    model = nn.Sequential(nn.Flatten(), nn.ReLU())  # every pixel is a unit; 3 x 5 x 5 - 9 of them always off
    value, units = proxies.swap_score(model, _sign_patterns(patterns, 5))
    assert units == 75
    assert value == 9 - 2 + 1  # 9 patterns, two repeats, plus the all-off pattern of the 66 padding units


def test_zico_is_zero_when_both_minibatch_parts_give_the_same_gradients(batch) -> None:
    images, labels = batch
    half = images.shape[0] // 2
    twice_images, twice_labels = torch.cat([images[:half]] * 2), torch.cat([labels[:half]] * 2)
    assert score("zico", TINY_ARCHS["tiny_conv"], twice_images, twice_labels).value == 0.0  # no gradient varies
    assert score("zico", TINY_ARCHS["tiny_conv"], images, labels).value > 0


class _ChannelsOf(nn.Module):
    """A 1x1 conv over 16 independent N(0, 1) channels of 64x64 positions (the images only set the batch size);
    `duplicate` makes every output channel the same one."""

    def __init__(self, duplicate: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            if duplicate:
                self.conv.weight[:, 0] = 1.0
            else:
                self.conv.weight[:, :, 0, 0] = torch.eye(16)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.randn(images.shape[0], 16, 64, 64, generator=torch.Generator().manual_seed(0)))


def test_meco_is_near_one_for_uncorrelated_channels_and_zero_for_copies(batch) -> None:
    images, _ = batch
    full, layers = proxies.meco_score(_ChannelsOf(duplicate=False), images)
    assert layers == 1 and 0.8 < full < 1.0  # smallest eigenvalue of a 16x16 sample correlation of 4096 draws
    with torch.random.fork_rng():
        torch.manual_seed(3)
        sampled, _ = proxies.meco_score(_ChannelsOf(duplicate=False), images, channels=8)
    assert 2 * 0.85 < sampled < 2 * 1.0  # 8 of the 16 channels, scaled by 16 / 8
    copies, _ = proxies.meco_score(_ChannelsOf(duplicate=True), images)
    assert abs(copies) < 1e-9  # every channel the same: a rank-1 correlation matrix


def test_grad_norm_and_snip_match_autograd(batch) -> None:
    images, labels = batch
    spec = TINY_ARCHS["tiny_single_head"]
    torch.manual_seed(0)
    model = build_model(spec).train()
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(F.cross_entropy(model(images), labels), params, allow_unused=True)
    pairs = [(p, g) for p, g in zip(params, grads) if g is not None]
    assert score("grad_norm", spec, images, labels).value == pytest.approx(sum(float(g.norm()) for _, g in pairs),
                                                                           rel=1e-5)
    assert score("snip", spec, images, labels).value == pytest.approx(
        sum(float((p.detach() * g).abs().sum()) for p, g in pairs), rel=1e-5)


def test_short_train_learns_cifar_well_above_chance(cifar) -> None:  # about 7 s
    reports: list[tuple[int, float]] = []
    result = score("short_train", TINY_ARCHS["tiny_conv"], steps=150, report=lambda s, a: reports.append((s, a)),
                   **cifar)
    assert result.value > 0.25, result.details
    assert reports == [(100, reports[0][1]), (150, result.value)]
    assert result.details["accuracies"] == [list(r) for r in reports] and not result.details["stopped_early"]


def test_short_train_stops_when_report_says_so(random_splits) -> None:
    torch.manual_seed(0)
    calls: list[int] = []
    value, details = short_train(build_model(TINY_ARCHS["tiny_conv"]), random_splits["train_data"],
                                 random_splits["test_data"], TrainRecipe(steps=30, report_every=10),
                                 report=lambda step, accuracy: calls.append(step) or step >= 20)
    assert calls == [10, 20] and details["stopped_early"] and details["steps"] == 20
    assert value == details["accuracies"][-1][1]


# --------------------------------------------------------------------------------------------------- errors
def test_registry_lists_data_free_proxies() -> None:
    assert DATA_FREE == ("params", "flops", "synflow")
    assert all(proxy.name == name and proxy.description for name, proxy in PROXIES.items())


def test_unknown_proxy_names_the_known_ones() -> None:
    with pytest.raises(ProxyError, match="unknown proxy 'jacob'; known proxies: params, flops, synflow, naswot"):
        score("jacob", TINY_ARCHS["tiny_conv"])


@pytest.mark.parametrize("name", DATA_PROXIES)
def test_data_proxies_without_data_say_which_proxies_are_data_free(name: str) -> None:
    with pytest.raises(ProxyError, match=rf"proxy '{name}' needs data \(--data\); data-free proxies: params, flops, "
                                         r"synflow"):
        score(name, TINY_ARCHS["tiny_conv"])


class _NaNOutput(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * float("nan")


@pytest.mark.parametrize("name", ["synflow", *DATA_PROXIES])
def test_a_network_with_nan_outputs_raises_proxy_error(name: str, batch, random_splits, monkeypatch) -> None:
    monkeypatch.setattr(scoring, "build_model",
                        lambda spec, num_classes=None: _NaNOutput(build_model(spec, num_classes)))
    with pytest.raises(ProxyError, match="not finite|nan"):
        _score_all(name, TINY_ARCHS["tiny_conv"], *batch, random_splits)


def test_malformed_batches_are_value_errors(batch) -> None:
    images, labels = batch
    with pytest.raises(ValueError, match="resolution is 64"):
        score("naswot", TINY_ARCHS["tiny_conv"], images, labels, resolution=64)
    with pytest.raises(ValueError, match="labels go up to 10 but the network has 10 classes"):
        score("snip", TINY_ARCHS["tiny_conv"], images, torch.full_like(labels, 10))


@pytest.mark.parametrize("arch", ["tiny_window", "tiny_qna", "tiny_conv"])
def test_az_nas_components_are_bounded_and_deterministic(arch: str, batch) -> None:
    images = batch[0][:6]

    def components() -> dict:
        torch.manual_seed(3)
        return proxies.az_nas_components(build_model(TINY_ARCHS[arch], num_classes=10), images)
    values = components()
    assert values == components()
    widths = [TINY_ARCHS[arch].stem.width] + [s.width for s in TINY_ARCHS[arch].stages for _ in range(s.depth)]
    # each feature's eigenvalue entropy lies in [0, log C]
    assert 0 < values["expressivity"] <= sum(math.log(c) for c in widths) + 1e-6
    assert values["progressivity"] <= values["expressivity"] / len(widths) + math.log(max(widths))
    assert values["trainability"] <= 0  # 2 - s - 1/s <= 0, 0 only at s = 1


def test_az_nas_components_pad_a_transition_from_an_odd_resolution() -> None:
    """At 20 px the stages run at 5, 3 and 2 positions a side: 5 -> 3 is a stride-2 transition with padding."""
    torch.manual_seed(0)
    values = proxies.az_nas_components(build_model(TINY_ARCHS["tiny_conv"], num_classes=10), torch.randn(5, 3, 20, 20))
    assert all(math.isfinite(v) for v in values.values()) and values["trainability"] < 0


def test_az_nas_trainability_is_zero_for_an_isometric_pair() -> None:
    """Features related by an orthogonal map R: g_in = g_out R, so E[g_in^T g_out] = R^T, top singular value 1."""
    class Stem(nn.Module):  # identity, through a parameter so that its output is in the autograd graph
        def __init__(self) -> None:
            super().__init__()
            self.one = nn.Parameter(torch.ones(()))

        def forward(self, x):
            return x * self.one

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0].float()

        def forward(self, x):
            return x @ self.rotation.T

    class Stage(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.Sequential(Block())

        def forward(self, x):
            return self.blocks(x.permute(0, 2, 3, 1))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.stages = Stem(), nn.ModuleList([Stage()])

        def forward(self, x):
            return self.stages[0](self.stem(x)).mean(dim=(1, 2))
    torch.manual_seed(0)
    values = proxies.az_nas_components(Net(), torch.randn(64, 3, 9, 9))
    assert values["trainability"] == pytest.approx(0.0, abs=0.05)


# ------------------------------------------------------------------------------------------------- ranker
def test_the_ranker_scores_its_features_as_the_single_proxies_compute_them(batch) -> None:
    spec = TINY_ARCHS["tiny_window"]
    result = score("ranker", spec, *batch, seed=3)
    features = result.details["features"]
    assert set(features) == set(RANKER_FEATURES)
    assert features["log_meco"] == pytest.approx(math.log(score("meco", spec, *batch, seed=3).value), rel=1e-9)
    assert features["log_flops"] == pytest.approx(math.log(score("flops", spec, *batch).value), rel=0.01)
    torch.manual_seed(3)
    expected = az_nas_components(build_model(spec, num_classes=10), batch[0])
    assert features["az_trainability"] != pytest.approx(0) and all(
        features[f"az_{name}"] == pytest.approx(value, rel=1e-6) for name, value in expected.items())
    assert result.value == pytest.approx(load_ranker().predict(features), rel=1e-12)
    assert "CIFAR-scale" in result.details["fitted_on"]
