from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx as onnx_module
import pytest
import torch

import nas.export as export_module
from nas.export import choose, export_study, model_name
from nas.trial_record import records
from search_spaces import TINY_ARCHS, count_flops, count_params

ROOT = Path(__file__).resolve().parents[2]


def test_model_name_is_an_identifier():
    assert model_name("a100-5ms-tpe-flops", 7) == "hnas_a100_5ms_tpe_flops_t0007"
    assert model_name("My.Study--2", 1234).isidentifier()


def test_choose_best_then_spread_pareto(stored_study):
    study, _ = stored_study
    rows = records(study)
    assert [(r.number, role) for r, role in choose(rows, 5)] == [(3, "best"), (0, "pareto"), (2, "pareto")]
    assert [(r.number, role) for r, role in choose(rows, 1)] == [(3, "best"), (0, "pareto")]
    assert [r.number for r, _ in choose(rows, 0)] == [3]
    assert choose(rows[4:], 3) == []


def test_export_writes_complete_folders(stored_study, tmp_path):
    study, storage = stored_study
    root = tmp_path / "exports/unit-study"
    earlier = root / model_name("unit-study", 9)  # an export of an earlier set, and a folder of the user's own
    earlier.mkdir(parents=True)
    (earlier / "arch.json").write_text("{}")
    (root / "my-notes").mkdir()
    paths = export_study(study, tmp_path, top_k=5, storage_url=storage, onnx=False)  # ONNX: the next test
    names = [model_name("unit-study", n) for n in (3, 0, 2)]
    assert [p.name for p in paths] == names
    assert sorted(p.name for p in root.iterdir()) == sorted([*names, "my-notes", "superseded"])  # no staging
    assert [p.name for p in (root / "superseded").iterdir()] == [earlier.name]  # set aside whole, not deleted
    assert (root / "superseded" / earlier.name / "arch.json").read_text() == "{}"
    best = paths[0]
    assert sorted(f.name for f in best.iterdir()) == ["MODEL_CARD.md", "arch.json", "export.json",
                                                      f"{names[0]}.py", "pareto.png"]
    spec = TINY_ARCHS["tiny_strip"]
    assert (best / "arch.json").read_text().strip() == spec.to_json()
    meta = json.loads((best / "export.json").read_text())
    assert meta["params"] == count_params(spec) and meta["flops"] == count_flops(spec, resolution=32)
    assert meta["role"] == "best" and meta["latency_ms"] == 4.5 and meta["proxy"] == {"synflow": 5.0}
    card = (best / "MODEL_CARD.md").read_text()
    for fact in ("Budget: 5 ms", "**4.500 ms**", "measured (cpu table)", f"{count_params(spec) / 1e6:.3f} M",
                 "| synflow (search objective) | 5 |", "python launch.py --target cpu --budget 5ms", "| stage0 |"):
        assert fact in card, fact
    assert "median end to end on this machine" in card  # the target is this machine (cpu): measured too
    assert (best / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_export_holds_a_checked_onnx_file_and_its_latency_here(stored_study, tmp_path):
    study, storage = stored_study
    (best,) = export_study(study, tmp_path, top_k=0, storage_url=storage)
    onnx_module.checker.check_model(str(best / "model.onnx"))  # a well-formed ONNX model
    meta = json.loads((best / "export.json").read_text())
    card = (best / "MODEL_CARD.md").read_text()
    onnx = meta["onnx"]
    assert onnx["file"] == "model.onnx" and onnx["error"] is None and 0 <= onnx["max_abs_diff"] < 1e-4
    assert onnx["onnxruntime_ms"] > 0  # the target is this machine: onnxruntime timed too
    assert f"max |difference| {onnx['max_abs_diff']:.2e}" in card and "onnxruntime (CPU) on this machine: " in card


def test_a_network_the_onnx_exporter_refuses_says_so_and_the_rest_lands(stored_study, tmp_path, monkeypatch):
    study, storage = stored_study

    def refuse(*args, **kwargs):
        raise NotImplementedError("aten::mystery_op has no ONNX symbolic\n(a long trace)")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    folder = export_study(study, tmp_path, top_k=0, storage_url=storage)[0]
    assert "model.onnx" not in {f.name for f in folder.iterdir()} and (folder / "arch.json").exists()
    reason = "not exportable to ONNX: NotImplementedError: aten::mystery_op has no ONNX symbolic"
    assert f"`model.onnx` not written: {reason}" in (folder / "MODEL_CARD.md").read_text()
    assert json.loads((folder / "export.json").read_text())["onnx"]["error"] == reason


def test_no_onnx_writes_no_onnx_file(stored_study, tmp_path):
    study, storage = stored_study
    folder = export_study(study, tmp_path, top_k=0, storage_url=storage, onnx=False)[0]
    assert "model.onnx" not in {f.name for f in folder.iterdir()}
    assert "not written (exported with --no-onnx)" in (folder / "MODEL_CARD.md").read_text()
    assert json.loads((folder / "export.json").read_text())["onnx"] is None


def test_exported_module_builds_with_timm_without_the_search(stored_study, tmp_path):
    study, storage = stored_study
    folder = export_study(study, tmp_path, top_k=0, storage_url=storage, onnx=False)[0]
    script = f"""
import sys
sys.path[:0] = [{str(ROOT)!r}, {str(folder)!r}]
import torch, {folder.name}, timm
model = timm.create_model("{folder.name}", num_classes=3).eval()
print(tuple(model(torch.randn(2, 3, 45, 29)).shape))
features = timm.create_model("{folder.name}", features_only=True, out_indices=(0, 1))
print([tuple(f.shape) for f in features(torch.randn(1, 3, 32, 32))])
print(sorted(m for m in ("nas", "optuna", "ray") if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    spec = TINY_ARCHS["tiny_strip"]
    assert lines[0] == "(2, 3)"
    assert lines[1] == str([(1, spec.stages[0].width, 8, 8), (1, spec.stages[1].width, 4, 4)])
    assert lines[2] == "[]"


def test_failed_export_leaves_the_previous_one_whole(stored_study, tmp_path, monkeypatch):
    study, storage = stored_study
    first = export_study(study, tmp_path, top_k=0, storage_url=storage, onnx=False)[0]
    before = {f.name: f.read_bytes() for f in first.iterdir()}

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "_model_card", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export_study(study, tmp_path, top_k=0, storage_url=storage, onnx=False)
    assert {f.name: f.read_bytes() for f in first.iterdir()} == before
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging folder or stray picture


def test_nothing_feasible_exports_nothing(stored_study, tmp_path):
    study, storage = stored_study
    study.set_user_attr("budget_ms", 0.5)  # every trial is now over budget
    assert export_study(study, tmp_path, top_k=3, storage_url=storage) == []
    assert not (tmp_path / "exports").exists()
