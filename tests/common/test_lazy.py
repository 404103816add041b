"""Lazy package namespaces: a name imports its own submodule only, and the `before` hook runs first."""
from __future__ import annotations

import sys

import pytest

from common.lazy import lazy_namespace


def test_a_name_imports_only_its_submodule_and_the_hook_runs_first(tmp_path, monkeypatch) -> None:
    package = tmp_path / "lazypkg"
    package.mkdir()
    (package / "light.py").write_text("VALUE = 7\n")
    (package / "heavy.py").write_text("import lazypkg\nlazypkg.ORDER.append('heavy')\nBIG = 3\n")
    (package / "__init__.py").write_text(
        "from common.lazy import lazy_namespace\nORDER = []\n"
        "__getattr__, __dir__ = lazy_namespace(__name__, {'VALUE': 'light', 'BIG': 'heavy'},\n"
        "                                      before=lambda sub: ORDER.append(f'before {sub}'))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazypkg
    assert lazypkg.VALUE == 7 and "lazypkg.heavy" not in sys.modules
    assert lazypkg.BIG == 3 and lazypkg.ORDER == ["before light", "before heavy", "heavy"]
    assert dir(lazypkg) == ["BIG", "VALUE"]
    with pytest.raises(AttributeError, match="has no attribute 'missing'"):
        lazypkg.missing
    for name in ("lazypkg", "lazypkg.light", "lazypkg.heavy"):
        sys.modules.pop(name, None)


def test_from_import_of_a_submodule_works_through_a_lazy_namespace() -> None:
    from nas.proxies import registry  # not an exported name: AttributeError lets the import system find it
    assert registry.PROXIES["flops"].kind == "lookup"
    getattr_, _ = lazy_namespace("nowhere", {})
    with pytest.raises(AttributeError):
        getattr_("x")
