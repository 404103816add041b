"""launch.py: the parser, `archs`, `check`, and bad input as one line with exit status 2 (the other commands: tests/launch/)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import launch
from search_spaces import TINY_ARCHS

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


