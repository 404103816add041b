"""The battery's verdict per case: status, traceback, stderr length and files left are what decide it."""
from __future__ import annotations

from benchmarks.bad_input_battery import CASES, Case, run_case


def test_a_clean_refusal_passes_and_a_wrong_status_or_a_stray_file_fails() -> None:
    (missing,) = [case for case in CASES if case.name == "check-missing-file"]
    row = run_case(missing)
    assert row["ok"] and row["status"] == 2 and row["stderr"][0].startswith("error: cannot read")
    assert not run_case(Case("expects-success", missing.argv, expect=0))["ok"]
    crash = run_case(Case("nested-json", ("check", "{dir}/deep.json"),
                          lambda folder: (folder / "deep.json").write_text("[" * 50 + "]" * 50)))
    assert crash["status"] == 2 and not crash["traceback"] and crash["ok"]

def test_case_names_are_unique() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names)) >= 40
