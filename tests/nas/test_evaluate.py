from __future__ import annotations

import os

import pytest
import torch

from nas.evaluate import PROXY_BATCH, EvalRequest, ProxyData, evaluate
from nas.proxies import score
from search_spaces import TINY_ARCHS

SPEC = TINY_ARCHS["tiny_window"]


def _data(n: int = 80, classes: int = 5, size: int = 20) -> ProxyData:
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=generator)
    y = torch.arange(n) % classes
    return ProxyData(x, y, x[:30], y[:30], classes)


def test_data_free_proxy_is_scored_and_nothing_else_counted():
    outcome = evaluate(EvalRequest(SPEC.to_json(), "synflow", proxy_resolution=40))
    assert outcome.ok and outcome.error is None
    assert outcome.value == pytest.approx(score("synflow", SPEC, resolution=40).value, rel=1e-9)
    assert outcome.params is None and outcome.flops is None  # the driver looks them up
    assert outcome.worker.endswith(f":{os.getpid()}") and outcome.seconds >= outcome.proxy_seconds > 0


def test_data_proxy_uses_one_fixed_minibatch():
    data = _data()
    request = EvalRequest(SPEC.to_json(), "naswot", proxy_resolution=24, seed=3)
    first, second = evaluate(request, data), evaluate(request, data)
    assert first.ok and first.value == second.value
    assert first.details["batch"] == PROXY_BATCH


def test_short_train_on_the_data_splits():
    outcome = evaluate(EvalRequest(TINY_ARCHS["tiny_conv"].to_json(), "short_train", proxy_resolution=20,
                                   train_steps=3), _data())
    assert outcome.ok and 0.0 <= outcome.value <= 1.0


def test_short_train_reports_and_stops_when_told():
    reports: list[tuple[int, float]] = []

    def stop_at_the_first_report(step: int, accuracy: float) -> bool:
        reports.append((step, accuracy))
        return True

    outcome = evaluate(EvalRequest(TINY_ARCHS["tiny_conv"].to_json(), "short_train", proxy_resolution=20,
                                   train_steps=250), _data(), report=stop_at_the_first_report)
    assert [step for step, _ in reports] == [100]  # reports every 100 steps; stopped at the first
    assert outcome.ok and outcome.value == reports[0][1]
    assert outcome.details["stopped_early"] and outcome.details["steps"] == 100


@pytest.mark.parametrize("request_fields, data, message", [
    ({"proxy": "naswot"}, None, "ProxyError: proxy 'naswot' needs data"),
    ({"proxy": "nope"}, None, "ProxyError: unknown proxy 'nope'"),
    ({"spec_json": '{"schema_version": 1}'}, None, "SpecError"),
])
def test_failures_come_back_as_outcomes(request_fields, data, message):
    fields = {"spec_json": SPEC.to_json(), "proxy": "synflow", "proxy_resolution": 32,
              **request_fields}
    outcome = evaluate(EvalRequest(**fields), data)
    assert not outcome.ok and outcome.value is None
    assert outcome.error.startswith(message) and "\n" not in outcome.error


def test_non_finite_network_output_is_a_failure(monkeypatch):
    import nas.evaluate as module

    def broken_score(name, spec, **kwargs):
        from nas.proxies import ProxyError
        raise ProxyError("synflow: the network's output is not finite (NaN or inf) on this input")

    monkeypatch.setattr(module, "score", broken_score)
    outcome = evaluate(EvalRequest(SPEC.to_json(), "synflow", 32))
    assert not outcome.ok and "not finite" in outcome.error


def test_out_of_memory_is_a_failure(monkeypatch):
    import nas.evaluate as module

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore text")

    monkeypatch.setattr(module, "score", oom)
    outcome = evaluate(EvalRequest(SPEC.to_json(), "synflow", 32))
    assert not outcome.ok and outcome.error == "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"
