"""launch.py: the commands that exist today, and bad input as one line with exit status 2."""
from __future__ import annotations

import json

import pytest

import launch
from search_spaces import TINY_ARCHS


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


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: command"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["archs", "--names", "resnet50"], "unknown architecture(s) resnet50"),
    (["archs", "--resolution", "0"], "expected a positive integer, got 0"),
    (["archs", "--resolution", "big"], "expected a positive integer, got 'big'"),
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
