from __future__ import annotations

import json

from benchmarks import additivity


def test_additivity_rows_and_flush_sweep(tmp_path, monkeypatch):
    monkeypatch.setattr(additivity, "FLUSH_MB", (1, 8))
    out = tmp_path / "additivity.json"
    assert additivity.main(["--archs", "3", "--resolution", "32", "--repeats", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["archs"] == 3 and len(result["rows"]) == 3
    for row in result["rows"]:
        assert abs(row["ratio"] - row["network_ms"] / row["blocks_alone_ms"]) < 1e-3 and row["weights_mb"] > 0
    assert result["ratio"]["min"] <= result["ratio"]["median"] <= result["ratio"]["max"]
    sweep = result["flush_sweep_first_arch"]
    assert set(sweep) == {"network_ms", "blocks_alone_ms_flush_1mb", "blocks_alone_ms_flush_8mb"}
    assert all(value > 0 for value in sweep.values())
