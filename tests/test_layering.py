"""The floors (docs/ARCHITECTURE.md): launch -> nas -> latency_tables -> search_spaces -> kernels -> common;
none imports up."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("common", "kernels", "search_spaces", "latency_tables", "nas")  # lowest first; launch.py sits on top


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__" and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names.add(node.args[0].value.split(".")[0])
    return names


def test_no_floor_imports_a_floor_above_it_or_the_benchmarks() -> None:
    offences = []
    for level, floor in enumerate(FLOORS):
        above = set(FLOORS[level + 1:]) | {"launch", "launch_parser", "benchmarks", "tests"}
        for path in sorted((ROOT / floor).rglob("*.py")):
            for name in sorted(_imported_packages(path) & above):
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offences == []


def test_the_layering_check_sees_imports_of_every_form(tmp_path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import nas.study\nfrom latency_tables import predict\nfrom . import x\n"
                      "def f():\n    from launch import main\n    return __import__('benchmarks._io')\n")
    assert _imported_packages(module) == {"nas", "latency_tables", "launch", "benchmarks"}
