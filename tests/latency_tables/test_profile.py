"""Cost profiles: affine in the batch, exact against a count made at that batch."""
from __future__ import annotations

import pytest
import torch

from latency_tables.block_costs import block_costs, profile_for
from latency_tables.blocks import decompose
from latency_tables.counting import COMPUTE_CLASSES, count_kernels
from latency_tables.profile import CostProfile, ProfileError, profile_from_kernels
from search_spaces import TINY_ARCHS, build_model, fold_batchnorm


def _totals(kernels) -> tuple[int, float, float]:
    return len(kernels), sum(k.flops for k in kernels), sum(k.bytes for k in kernels)


@pytest.mark.parametrize("arch", sorted(TINY_ARCHS))
@pytest.mark.parametrize("batch", [3, 7])
def test_a_block_profile_extends_exactly_to_other_batches(arch, batch) -> None:
    for block in decompose(TINY_ARCHS[arch], 33)[:6]:
        profiles, _, _ = block_costs(block, "triton-compiled-half")
        profile = profile_for(profiles, batch)
        traced = count_kernels(lambda: fold_batchnorm(block.build()), tuple(block.example_input(batch, device="meta")
                                                                          .shape), torch.float16, True)["compiled"]
        kernels, flops, moved = _totals(traced)
        assert profile.kernels == kernels
        assert profile.flops(batch) == pytest.approx(flops, rel=1e-9)
        assert profile.bytes(batch) == pytest.approx(moved, rel=1e-9)
        classes, per_flops, per_bytes = profile.arrays(batch)
        compute = [k for k in traced if k.op_class in COMPUTE_CLASSES]
        assert per_flops.tolist() == pytest.approx([k.flops for k in compute])
        assert per_bytes.tolist() == pytest.approx([k.bytes for k in compute])


def test_a_network_profile_at_batch_1024_matches_its_traced_count() -> None:
    from latency_tables.profile import profile_module
    spec = TINY_ARCHS["tiny_window"]
    profile = profile_module(lambda: build_model(spec), (3, 32, 32), torch.float16, True, ("eager",))["eager"]
    traced = count_kernels(lambda: build_model(spec), (1024, 3, 32, 32), torch.float16, True, ("eager",))["eager"]
    kernels, flops, moved = _totals(traced)
    assert (profile.kernels, profile.flops(1024), profile.bytes(1024)) == (kernels, pytest.approx(flops),
                                                                            pytest.approx(moved))


def test_kernels_that_differ_between_the_two_batches_are_refused() -> None:
    one = count_kernels(lambda: torch.nn.Linear(8, 8), (1, 8), torch.float16, False, ("eager",))["eager"]
    two = count_kernels(lambda: torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()), (2, 8), torch.float16,
                        False, ("eager",))["eager"]
    with pytest.raises(ProfileError, match="memory kernels differ"):
        profile_from_kernels(one, two)


def test_a_profile_refuses_batches_below_its_base_and_round_trips_through_json() -> None:
    profile = CostProfile((("gemm", 10.0, 2.0, 100.0, 5.0),), (("norm", 3, 40.0, 4.0),), base=2)
    with pytest.raises(ValueError, match="from batch 2 up"):
        profile.flops(1)
    assert profile.flops(5) == 16.0 and profile.bytes(5) == 115.0 + 52.0 and profile.kernels == 4
    assert CostProfile.from_json(profile.to_json()) == profile
