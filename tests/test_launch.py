"""launch.py: the commands that exist today, and bad input as one line with exit status 2."""
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
from search_spaces import REFERENCE_ARCHS, TINY_ARCHS

ROOT = Path(__file__).resolve().parents[1]


def test_archs_prints_params_and_gflops(capsys) -> None:
    assert launch.main(["archs", "--names", "shvit_s1_like"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[0] == "shvit_s1_like" and float(row[1]) == pytest.approx(6.33, abs=0.01)
    assert float(row[2]) == pytest.approx(0.244, abs=0.002)


def test_check_accepts_a_valid_spec_file(tmp_path, capsys) -> None:
    path = tmp_path / "arch.json"
    path.write_text(TINY_ARCHS["tiny_strip"].to_json())
    assert launch.main(["check", str(path), "--resolution", "32"]) == 0
    assert f"digest {TINY_ARCHS['tiny_strip'].digest()}" in capsys.readouterr().out


_HEAVY = ("torch", "timm", "optuna", "ray", "fvcore")


def test_every_command_of_the_parser_has_a_runner() -> None:
    from launch_parser import COMMANDS
    assert tuple(launch.RUN) == COMMANDS


@pytest.mark.parametrize("argv", [["--help"], ["search", "--help"], ["measure", "--help"],
                                  ["--target", "cpu", "--budget", "5"], ["check", "missing.json"]])
def test_help_and_bad_input_import_no_heavy_package(argv) -> None:
    """Why `--help`, bad flags and check's file errors answer at once: no torch, timm, Optuna or Ray imported."""
    code = (f"import sys, launch\ntry:\n    status = launch.main({argv!r})\nexcept SystemExit as e:\n"
            f"    status = e.code\nprint(status, sorted(m for m in {_HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    status, heavy = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert heavy == "[]" and status in ("0", "2"), done.stderr


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: command"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["archs", "--names", "resnet50"], "unknown architecture(s) resnet50"),
    (["archs", "--resolution", "0"], "expected a size of 16-2048 pixels, got 0"),
    (["archs", "--resolution", "big"], "expected a size of 16-2048 pixels, got 'big'"),
    (["costs", "--resolution", "100000"], "expected a size of 16-2048 pixels, got 100000"),
    (["check", "x.json", "--resolution", "7"], "expected a size of 16-2048 pixels, got 7"),
    (["check", "/no/such/arch.json"], "cannot read /no/such/arch.json"),
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str, capsys) -> None:
    assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_check_rejects_an_invalid_spec_with_the_field(tmp_path, capsys) -> None:
    data = TINY_ARCHS["tiny_window"].to_dict()
    data["stages"][1]["mixer"]["num_heads"] = 7
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    assert launch.main(["check", str(path)]) == 2
    assert "stages[1].mixer.num_heads: width 64 is not divisible by 7 heads" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe{\x00}", "not UTF-8 text (byte 0)"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"stages": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
])
@pytest.mark.parametrize("command", [["check"], ["latency", "--target", "cpu"]])
def test_unreadable_spec_files_are_one_line(tmp_path, capsys, content: bytes, message: str, command) -> None:
    path = tmp_path / "arch.json"
    path.write_bytes(content)
    assert launch.main([command[0], str(path), *command[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize("flags", [["--dtype", "fp16"], ["--batch", "8"]])
def test_latency_on_cpu_at_settings_the_table_has_not_measured_is_one_line(tmp_path, capsys, flags) -> None:
    path = tmp_path / "arch.json"
    path.write_text(TINY_ARCHS["tiny_conv"].to_json())
    assert launch.main(["latency", str(path), "--target", "cpu", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"python launch.py measure --target cpu {' '.join(flags)} --archs 20" in err


def test_latency_of_a_spec_on_an_unmeasured_gpu_is_labelled_estimated(tmp_path, capsys) -> None:
    path = tmp_path / "arch.json"
    path.write_text(TINY_ARCHS["tiny_conv"].to_json())
    assert launch.main(["latency", str(path), "--target", "a100", "--resolution", "64"]) == 0  # no a100 table ships
    out = capsys.readouterr().out
    assert " ms on a100 — estimated: compiled runtime, calibrated on public timm benchmarks" in out
    assert "stage2" in out
    assert launch.main(["latency", str(path), "--target", "a100", "--latency-db", str(tmp_path / "a100.sqlite"),
                        "--resolution", "64"]) == 2  # a table named that does not exist: a typo, not an empty table
    assert "no latency table at " in capsys.readouterr().err and not (tmp_path / "a100.sqlite").exists()


def test_measure_then_latency_on_cpu(tmp_path, capsys) -> None:
    db = str(tmp_path / "cpu.sqlite")
    path = tmp_path / "arch.json"
    path.write_text(REFERENCE_ARCHS["shvit_s1_like"].to_json())  # its blocks are measured with --archs
    assert launch.main(["measure", "--target", "cpu", "--latency-db", db, "--resolution", "32", "--archs", "1",
                        "--networks", "3", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "measured" in out and "additivity correction from 3 networks" in out
    assert launch.main(["latency", str(path), "--target", "cpu", "--latency-db", db, "--resolution", "32"]) == 0
    assert "— measured (cpu table); additivity-corrected on 3 networks" in capsys.readouterr().out
    assert launch.main(["measure", "--target", "cpu", "--latency-db", db, "--resolution", "32", "--check", "4",
                        "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("4 stored entries timed again: now ") and "measuring" not in out
    assert lines[1].startswith("3 networks of its additivity correction timed again: now ")
    ratio = float(lines[1].split("now ")[1].split("x")[0])
    assert lines[2].startswith("cpu table: its networks run ")
    assert ("refit the correction" in lines[2]) == (abs(ratio - 1) > 0.05)
    assert launch.main(["measure", "--target", "cpu", "--latency-db", db, "--resolution", "32", "--refit",
                        "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("additivity correction from 3 networks measured end to end: network = ")


def test_measure_refit_without_stored_networks_is_one_line(tmp_path, capsys) -> None:
    assert launch.main(["measure", "--target", "cpu", "--latency-db", str(tmp_path / "t.sqlite"), "--refit"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no correction with stored networks to refit" in err


def test_measure_check_of_an_empty_table_is_one_line(tmp_path, capsys) -> None:
    assert launch.main(["measure", "--target", "cpu", "--latency-db", str(tmp_path / "t.sqlite"), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no entries to check" in err


@pytest.mark.parametrize("argv, message", [
    (["measure", "--target", "h100", "--archs", "1"], "target 'h100' needs an NVIDIA H100"),
    (["measure", "--target", "tpu"], "unknown latency target 'tpu'; known targets: a100"),
    (["measure", "--target", "cpu", "--dtype", "int8"], "invalid choice: 'int8'"),
    (["measure", "--target", "cpu", "--archs", "1", "--networks", "2"], "expected 0 (no correction) or at least 3"),
    (["measure", "--target", "a100", "--archs", "1"], "target 'a100' needs an NVIDIA A100"),
    (["latency", "/no/arch.json", "--target", "cpu"], "cannot read /no/arch.json"),
])
def test_table_commands_reject_bad_input_in_one_line(argv: list[str], message: str, capsys, tmp_path) -> None:
    assert launch.main(argv + ["--latency-db", str(tmp_path / "t.sqlite")]) == 2
    assert not (tmp_path / "t.sqlite").exists()  # a refused measure creates no table
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_corrupt_latency_db_is_one_line_and_untouched(tmp_path, capsys) -> None:
    db = tmp_path / "broken.sqlite"
    db.write_bytes(b"this is not sqlite" * 10)
    path = tmp_path / "arch.json"
    path.write_text(TINY_ARCHS["tiny_conv"].to_json())
    assert launch.main(["latency", str(path), "--target", "cpu", "--latency-db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not an SQLite database" in err and "left untouched" in err
    assert db.read_bytes() == b"this is not sqlite" * 10


def test_measure_killed_midway_keeps_finished_entries_and_resumes(tmp_path) -> None:
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time
    from pathlib import Path

    from latency_tables.storage import LatencyDB

    db = tmp_path / "cpu.sqlite"
    argv = [sys.executable, "launch.py", "measure", "--target", "cpu", "--latency-db", str(db), "--resolution", "32",
            "--archs", "3", "--networks", "0", "--repeats", "3"]
    root = Path(launch.__file__).resolve().parent
    process = subprocess.Popen(argv, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if db.exists() and LatencyDB(db).count() >= 5:
                break
            time.sleep(0.2)
        assert process.poll() is None, "measure finished before it could be interrupted"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    kept = LatencyDB(db).count()
    assert kept >= 5
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    result = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    first_line = result.stdout.splitlines()[0]
    assert f": {kept} entries; measuring " in first_line  # only the rest is measured again
    assert LatencyDB(db).count() > kept


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
_SMALL_TIMM = ("resnet18", "resnet26", "resnet34", "mobilenetv2_050", "mobilenetv2_100", "mobilenetv3_small_050",
               "mobilenetv3_large_100", "efficientnet_b0", "convnext_atto", "convnext_femto", "vit_tiny_patch16_224",
               "deit_tiny_patch16_224", "regnetx_002", "regnety_002", "ghostnet_100", "mnasnet_050", "lcnet_050",
               "resnet10t", "levit_128s", "efficientvit_m0", "resnet14t", "densenet121", "vgg11", "dla34")


def test_calibrate_fits_a_target_on_its_own_csv_and_its_estimates_say_so(tmp_path, monkeypatch, capsys) -> None:
    from latency_tables import calibration
    from latency_tables.calibration import Sample, load_calibrations
    from latency_tables.gpu_model import gpu_rates, profile_seconds
    from latency_tables.targets import get_target
    from latency_tables.gpu_model import Calibration
    from latency_tables.timm_bench import count_models
    truth = Calibration("eager", compute={"gemm": 0.7, "conv": 0.55, "dwconv": 0.2, "attention": 0.45},
                        bandwidth={"gemm": 0.6, "conv": 0.5, "dwconv": 0.4, "attention": 0.8, "norm": 0.65,
                                   "elementwise": 0.85}, kernel_flops=1e8, fitted_on="a known L4")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(calibration, "DATA", tmp_path / "data")
    counts = count_models([(name, 64) for name in _SMALL_TIMM])
    rates = gpu_rates(get_target("l4"), "fp16")
    lines = ["model,infer_img_size,infer_samples_per_sec,infer_step_time,infer_batch_size,param_count"]
    for name in _SMALL_TIMM:
        profile = counts[(name, 64)].profiles["eager"]
        ms = 1e3 * profile_seconds(profile, 256, rates, truth)
        lines.append(f"{name},64,{256 / ms * 1e3:.1f},{ms:.6f},256,1.0")
    csv_path = tmp_path / "l4.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    assert launch.main(["calibrate", "--benchmarks", str(csv_path), "--target", "l4"]) == 0
    out = capsys.readouterr().out
    assert "calibrated l4 (eager) on 24 models" in out
    fitted = load_calibrations(calibration.target_calibration_path("l4"))["eager"]
    samples = [Sample(counts[(n, 64)].profiles["eager"], 256, 1.0, rates) for n in _SMALL_TIMM]
    for sample, line in zip(samples, lines[1:]):
        assert profile_seconds(sample.profile, 256, rates, fitted) * 1e3 == pytest.approx(float(line.split(",")[3]),
                                                                                      rel=0.03)
    spec = tmp_path / "arch.json"
    spec.write_text(TINY_ARCHS["tiny_conv"].to_json())
    assert launch.main(["latency", str(spec), "--target", "l4", "--runtime", "eager", "--resolution", "64"]) == 0
    assert "calibrated on l4.csv (24 timm models measured on l4, eager)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["calibrate", "--benchmarks", "/no/such.csv", "--target", "a100"], "cannot read /no/such.csv"),
    (["calibrate", "--benchmarks", "x.csv", "--target", "cpu"], "calibrate fits a GPU target"),
    (["calibrate", "--benchmarks", "x.csv", "--target", "z80"], "unknown latency target 'z80'"),
])
def test_calibrate_bad_input_is_one_line(argv, message, capsys) -> None:
    assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_calibrate_with_too_few_usable_models_writes_nothing(tmp_path, monkeypatch, capsys) -> None:
    from latency_tables import calibration
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(calibration, "DATA", tmp_path / "data")
    csv_path = tmp_path / "few.csv"
    csv_path.write_text("model,infer_img_size,infer_step_time,infer_batch_size\nresnet18,64,5.0,256\n"
                        "not_a_timm_model,64,5.0,256\n")
    assert launch.main(["calibrate", "--benchmarks", str(csv_path), "--target", "a100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 of 2 rows can be used" in err
    assert not (tmp_path / "data").exists()
