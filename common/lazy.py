"""Lazy package namespaces (PEP 562): ``from package import Name`` imports the submodule defining `Name` on first
use, so a light name (a spec class, a constant) never pulls torch in with the heavy ones."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

__all__ = ["lazy_namespace"]


def lazy_namespace(package: str, exports: Mapping[str, str], before: Callable[[str], None] | None = None
                   ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for `package`: `exports` maps each public name to the submodule (relative to
    `package`) that defines it; `before(submodule)`, if given, runs before a submodule's first import."""
    def __getattr__(name: str) -> Any:
        try:
            submodule = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        if before is not None:
            before(submodule)
        return getattr(importlib.import_module(f"{package}.{submodule}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
