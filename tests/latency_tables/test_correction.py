"""The additivity correction: its fit, the dropping of a negative per-MB term, and the MB it is fitted on."""
from __future__ import annotations

import pytest

from latency_tables.blocks import decompose
from latency_tables.correction import AdditivityCorrection, activations_mb, weights_mb
from latency_tables.estimate import EstimationError
from search_spaces import TINY_ARCHS, build_model


def test_additivity_correction_recovers_scale_and_per_mb_costs() -> None:
    shapes = [(10.0, 12.5, 3.1), (25.0, 41.0, 2.2), (4.0, 3.3, 0.7), (60.0, 88.0, 9.4), (8.0, 7.0, 5.5)]
    samples = [(s, w, a, 1.06 * s + 0.035 * w + 0.4 * a) for s, w, a in shapes]
    fit = AdditivityCorrection.fit(samples)
    assert fit.scale == pytest.approx(1.06, rel=1e-6) and fit.ms_per_weight_mb == pytest.approx(0.035, rel=1e-5)
    assert fit.ms_per_activation_mb == pytest.approx(0.4, rel=1e-5)
    assert fit.block_ms(2.0, 10.0, 0.5) == pytest.approx(2.12 + 0.35 + 0.2)
    assert fit.median_abs_err_after < 1e-9 < fit.median_abs_err_before
    with pytest.raises(EstimationError, match="at least 3 networks"):
        AdditivityCorrection.fit(samples[:2])


def test_a_per_mb_cost_that_fits_negative_is_dropped_and_the_rest_refit() -> None:
    shapes = [(10.0, 12.5, 3.1), (25.0, 41.0, 2.2), (4.0, 3.3, 0.7), (60.0, 88.0, 9.4), (8.0, 7.0, 5.5)]
    fit = AdditivityCorrection.fit([(s, w, a, 1.2 * s - 0.01 * w + 0.3 * a) for s, w, a in shapes])
    assert fit.ms_per_weight_mb == 0.0 and fit.scale > 0 and fit.ms_per_activation_mb >= 0
    both_negative = AdditivityCorrection.fit([(s, w, a, 1.3 * s - 0.02 * w - 0.5 * a) for s, w, a in shapes])
    assert both_negative.ms_per_activation_mb == 0.0  # the more negative term goes first; the others refit
    assert both_negative.ms_per_weight_mb >= 0.0 and both_negative.scale > 0


def test_weights_mb_counts_every_blocks_parameters() -> None:
    spec = TINY_ARCHS["tiny_window"]
    params = sum(p.numel() for p in build_model(spec).parameters())
    assert weights_mb(decompose(spec, 32), "fp32") == pytest.approx(params * 4 / 2**20)
    assert weights_mb(decompose(spec, 32), "bf16") == pytest.approx(params * 2 / 2**20)


def test_activations_mb_sums_the_blocks_inputs_at_the_batch() -> None:
    blocks = decompose(TINY_ARCHS["tiny_window"], 37)
    assert blocks[0].in_shape == (3, 37, 37)
    elements = sum(b.in_shape[0] * b.in_shape[1] * b.in_shape[2] for b in blocks)
    assert activations_mb(blocks, 3, "fp32") == pytest.approx(3 * elements * 4 / 2**20)
    assert activations_mb(blocks[:1], 1, "bf16") == pytest.approx(3 * 37 * 37 * 2 / 2**20)
