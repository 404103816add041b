from __future__ import annotations

import json
from pathlib import Path

import pytest

from latency_tables.targets import local_cores
from nas.config import (
    AUTO_TPE_MAX_TRIALS, DEFAULT_PROXY_DATA_FREE, DEFAULT_PROXY_WITH_DATA, ConfigError, SearchConfig, auto_sampler,
    format_ms, parse_latency_ms,
)
from nas.proxies import DATA_FREE, PROXIES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text, expected_ms", [
    ("5ms", 5.0), ("5.5ms", 5.5), ("800us", 0.8), ("0.25ms", 0.25), (" 12 MS ", 12.0), ("1500µs", 1.5),
    (".5ms", 0.5),
])
def test_parse_latency_ms_accepts_units(text, expected_ms):
    assert parse_latency_ms(text) == pytest.approx(expected_ms)


@pytest.mark.parametrize("text", ["5", "5s", "fast", "", "-1ms", "0ms", "ms", "5 ms ms", "1e3ms", "nanms", "5,5ms"])
def test_parse_latency_ms_rejects_everything_else(text):
    with pytest.raises(ConfigError, match="budget"):
        parse_latency_ms(text)


@pytest.mark.parametrize("latency_ms, text", [(5.0, "5ms"), (5.5, "5.5ms"), (0.8, "800us"), (12.25, "12.25ms"),
                                             (1e6, "1000000ms"), (0.0123, "12.3us")])
def test_format_ms_round_trips(latency_ms, text):
    assert format_ms(latency_ms) == text
    assert parse_latency_ms(text) == pytest.approx(latency_ms)


def test_auto_sampler_follows_the_trial_count_and_keeps_one_study_name():
    small = SearchConfig(target="a100", budget_ms=5.0, trials=AUTO_TPE_MAX_TRIALS).resolved()
    large = SearchConfig(target="a100", budget_ms=5.0, trials=AUTO_TPE_MAX_TRIALS + 1).resolved()
    assert (small.sampler, large.sampler) == ("tpe", "nsga2")
    assert small.study == large.study == "a100-5ms-auto-flops"  # more --trials resumes the same study
    assert small.objective == large.objective == "best"  # auto keeps one objective; --sampler nsga2 means pareto
    assert auto_sampler(1) == "tpe" and auto_sampler(10_000) == "nsga2"


def test_resolved_defaults_depend_on_the_other_fields(tmp_path):
    plain = SearchConfig(target="a100", budget_ms=5.0).resolved()
    assert (plain.objective, plain.proxy, plain.study) == ("best", DEFAULT_PROXY_DATA_FREE, "a100-5ms-auto-flops")
    assert plain.sampler == "tpe" and plain.out == Path("runs/a100-5ms-auto-flops")
    assert plain.storage == f"sqlite:///{(plain.out / 'study.db').resolve()}"
    pareto = SearchConfig(target="h100", budget_ms=0.8, sampler="nsga2", data=tmp_path, out=tmp_path).resolved()
    assert (pareto.objective, pareto.proxy) == ("pareto", DEFAULT_PROXY_WITH_DATA)
    assert pareto.study == f"h100-800us-nsga2-{DEFAULT_PROXY_WITH_DATA}"
    assert pareto.storage == f"sqlite:///{tmp_path.resolve()}/study.db"
    explicit = SearchConfig(target="cpu", budget_ms=30, study="mine", storage="sqlite:///x.db", objective="pareto")
    assert explicit.resolved().study == "mine" and explicit.resolved().storage == "sqlite:///x.db"
    assert explicit.resolved().objective == "pareto"


@pytest.mark.parametrize("fields, message", [
    ({"budget_ms": 0.0}, "budget"), ({"budget_ms": float("nan")}, "budget"), ({"trials": 0}, "--trials"),
    ({"workers": 0}, "--workers"), ({"sampler": "cmaes"}, "unknown sampler"), ({"objective": "fast"}, "objective"),
    ({"study": "bad name!"}, "study name"), ({"timeout_s": -1.0}, "--timeout"), ({"top_k": -1}, "--top"),
    ({"resolution": 0}, "--resolution"), ({"train_steps": 0}, "--train-steps"), ({"pruner": "asha"}, "unknown pruner"),
])
def test_invalid_settings_raise_config_error(fields, message):
    with pytest.raises(ConfigError, match=message):
        SearchConfig(**{"target": "a100", "budget_ms": 5.0, **fields})


def test_more_local_workers_than_cores_is_refused_but_a_cluster_may_have_them():
    cores = local_cores()
    with pytest.raises(ConfigError, match=f"this machine has {cores}; use at most {cores}, or --ray-address"):
        SearchConfig(target="a100", budget_ms=5.0, workers=cores + 1)
    on_a_cluster = SearchConfig(target="a100", budget_ms=5.0, workers=cores + 1, ray_address="10.0.0.7:6379")
    assert on_a_cluster.workers == cores + 1


def test_default_proxies_are_the_benchmarks_picks():
    """The defaults must follow benchmarks/results/proxy-quality.json: the best-ranking proxy with data, and the
    best-ranking data-free one without."""
    assert DEFAULT_PROXY_DATA_FREE in DATA_FREE and DEFAULT_PROXY_WITH_DATA in PROXIES
    result_file = ROOT / "benchmarks/results/proxy-quality.json"
    if not result_file.exists():
        pytest.skip("proxy-quality benchmark not run yet")
    result = json.loads(result_file.read_text())
    assert result["default_proxy"] == DEFAULT_PROXY_WITH_DATA
    data_free = {name: p["spearman"] for name, p in result["proxies"].items() if name in DATA_FREE}
    assert max(data_free, key=data_free.get) == DEFAULT_PROXY_DATA_FREE
