"""launch.py search and export: bad flags, files in the way, storages refused, resuming, re-exporting."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import launch
from search_spaces import TINY_ARCHS

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------- search
SEARCH = ["--target", "a100", "--budget", "5ms"]


@pytest.mark.parametrize("argv, message", [
    (["--target", "a100", "--budget", "5"], "budget '5' is not a latency: write a number and a unit"),
    (["--target", "a100", "--budget", "fast"], "budget 'fast' is not a latency"),
    (["--target", "a100", "--budget=-1ms"], "budget '-1ms' is not a latency"),
    (["--target", "a100", "--budget", "0ms"], "budget '0ms' must be a positive latency"),
    (["--target", "a100"], "the following arguments are required: --budget"),
    (SEARCH + ["--trials", "0"], "argument --trials: expected a positive integer, got 0"),
    (SEARCH + ["--workers", "two"], "argument --workers: expected a positive integer, got 'two'"),
    (SEARCH + ["--timeout=-5"], "argument --timeout: expected a positive number of seconds, got '-5'"),
    (SEARCH + ["--sampler", "cmaes"], "argument --sampler: invalid choice: 'cmaes'"),
    (SEARCH + ["--pruner", "hyperband"], "argument --pruner: invalid choice: 'hyperband'"),
    (SEARCH + ["--proxy", "magic"], "argument --proxy: invalid choice: 'magic'"),
    (SEARCH + ["--objective", "fastest"], "argument --objective: invalid choice: 'fastest'"),
    (SEARCH + ["--resolution", "0"], "argument --resolution: expected a size of 16-2048 pixels, got 0"),
    (SEARCH + ["--resolution", "100000"], "argument --resolution: expected a size of 16-2048 pixels, got 100000"),
    (SEARCH + ["--proxy-resolution", "7"], "argument --proxy-resolution: expected a size of 16-2048 pixels, got 7"),
    (SEARCH + ["--top=-1"], "argument --top: expected an integer >= 0, got -1"),
    (SEARCH + ["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--target", "tpu", "--budget", "5ms"], "unknown latency target 'tpu'; known targets: a100, a10g, cpu"),
    (SEARCH + ["--study", "bad name!"], "study name 'bad name!' must be 1-100 letters"),
    (SEARCH + ["--proxy", "naswot"], "proxy 'naswot' needs images: pass --data"),
    (SEARCH + ["--data", "/no/such/images"], "/no/such/images: no such file or folder"),
    (SEARCH + ["--storage", "notadb://x"], "cannot open storage notadb://x"),
    (["export", "--study", "never-ran"], "no study 'never-ran' under runs/never-ran"),
    (["dashboard", "--study", "x", "--port", "70000"], "argument --port: expected a port number 1-65535"),
])
def test_search_bad_flags_are_one_line_and_exit_2(argv, message, capsys, tmp_path) -> None:
    if argv[0] not in ("export", "dashboard") and "--out" not in argv:
        argv = argv + ["--out", str(tmp_path)]
    assert launch.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and message in captured.err, captured.err
    assert not (tmp_path / "study.db").exists()  # nothing stored for a refused search


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_an_output_folder_a_file_is_in_the_way_of_is_one_line(tmp_path, capsys, where: str) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("mine\n")
    out = blocker if where == "file" else blocker / "run"
    assert launch.main(SEARCH + ["--trials", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write the output folder --out {out}" in err
    assert blocker.read_text() == "mine\n"  # left as it was


def test_export_into_a_folder_a_file_is_in_the_way_of_is_one_line(stored_study_file, tmp_path, capsys) -> None:
    storage, _ = stored_study_file
    blocker = tmp_path / "exports-here"
    blocker.write_text("mine\n")
    assert launch.main(["export", "--study", "unit-study", "--storage", storage, "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write exports under" in err and blocker.read_text() == "mine\n"


def test_a_latency_table_is_refused_as_a_study_storage_and_left_byte_identical(tmp_path, capsys) -> None:
    table = tmp_path / "cpu.sqlite"
    shutil.copyfile(ROOT / "latency_tables/data/cpu.sqlite", table)
    before = table.read_bytes()
    out = tmp_path / "runs" / "r"
    assert launch.main(SEARCH + ["--trials", "2", "--storage", f"sqlite:///{table}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a latency table, not a study storage" in err
    assert table.read_bytes() == before and not (tmp_path / "runs").exists()  # no empty --out, nor its parent


def test_a_study_storage_is_refused_as_a_latency_table(stored_study_file, tmp_path, capsys) -> None:
    storage, _ = stored_study_file
    path = tmp_path / "arch.json"
    path.write_text(TINY_ARCHS["tiny_conv"].to_json())
    study_file = storage.removeprefix("sqlite:///")
    before = Path(study_file).read_bytes()
    assert launch.main(["latency", str(path), "--target", "cpu", "--latency-db", study_file]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an Optuna study storage, not a latency table" in err
    assert Path(study_file).read_bytes() == before


def test_a_ray_address_nobody_listens_at_fails_before_anything_is_written(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert launch.main(SEARCH + ["--trials", "2", "--proxy", "synflow", "--ray-address", "127.0.0.1:1",
                                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Ray cluster answers at 127.0.0.1:1" in err
    assert not (out / "study.db").exists()  # refused before the study (Ray's own init retries for minutes)


def test_search_resuming_with_another_budget_is_refused(stored_study_file, capsys) -> None:
    storage, out = stored_study_file
    argv = ["--target", "cpu", "--budget", "7ms", "--study", "unit-study", "--storage", storage, "--out", str(out),
            "--proxy", "synflow", "--resolution", "32", "--accept-stale-table"]  # whatever this machine's speed
    assert launch.main(argv) == 2
    assert "study 'unit-study' was made with budget_ms=5.0, not 7.0" in capsys.readouterr().err


def test_export_command_reexports_a_stored_study(stored_study_file, capsys) -> None:
    storage, out = stored_study_file
    assert launch.main(["export", "--study", "unit-study", "--storage", storage, "--out", str(out), "--top",
                        "1", "--no-onnx"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split("/")[-1] for line in printed] == ["hnas_unit_study_t0003", "hnas_unit_study_t0000"]
    assert (out / "exports/unit-study/hnas_unit_study_t0003/MODEL_CARD.md").exists()
    assert not (out / "exports/unit-study/hnas_unit_study_t0003/model.onnx").exists()  # --no-onnx


def test_export_rewrites_the_searchs_summary_list_of_exports(stored_study_file, capsys) -> None:
    storage, out = stored_study_file
    (out / "summary.json").write_text(json.dumps({"study": "unit-study", "exports": ["/gone/hnas_old_t0001"],
                                                  "trials": {"total": 6}}))
    assert launch.main(["export", "--study", "unit-study", "--storage", storage, "--out", str(out), "--top", "0",
                        "--no-onnx"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exports"] == [str(out / "exports/unit-study/hnas_unit_study_t0003")]
    assert summary["trials"] == {"total": 6}  # the rest as the search wrote it


def test_sigterm_during_export_leaves_whole_folders_and_says_what_it_left(stored_study_file) -> None:
    storage, out = stored_study_file
    process = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "export", "--study", "unit-study",
                                "--storage", storage, "--out", str(out), "--top", "5"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = out / "exports/unit-study"
    deadline = time.monotonic() + 120
    while not (root.exists() and any(p.name.startswith(".staging-") for p in root.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline, "export ended before it was stopped"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 143, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted: each export folder is whole")
    left = sorted(p.name for p in root.iterdir())
    assert all(name.startswith("hnas_unit_study_t") for name in left), left  # no .staging-* or .pareto-*.png
    assert all((root / name / "MODEL_CARD.md").exists() for name in left)


# ------------------------------------------------------------------------------------------------ calibrate
