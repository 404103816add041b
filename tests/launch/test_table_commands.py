"""launch.py latency and measure: a table measured, read, checked and resumed; bad input as one line."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import launch
from latency_tables.storage import LatencyDB
from search_spaces import REFERENCE_ARCHS, TINY_ARCHS

ROOT = Path(__file__).resolve().parents[2]


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
    db = tmp_path / "cpu.sqlite"
    argv = [sys.executable, "launch.py", "measure", "--target", "cpu", "--latency-db", str(db), "--resolution", "32",
            "--archs", "3", "--networks", "0", "--repeats", "3"]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    first_line = result.stdout.splitlines()[0]
    assert f": {kept} entries; measuring " in first_line  # only the rest is measured again
    assert LatencyDB(db).count() > kept


