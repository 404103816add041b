"""The token mixers: one `MixerEntry` each, which the space, its sampler, the backbone, the latency tables' block
enumeration and the exports all read. The six built-in ones are declared in `search_spaces.mixers`.

A mixer of your own plugs in with one entry (docs/ARCHITECTURE.md, "Adding a mixer"): its spec (a frozen
dataclass with a ``kind`` class variable, defaults for every field and ``validate(width, field)`` raising
`SpecError`), its block builder, its sampler and the specs the sampler can return. Register it with
`register_mixer` in a module that the search imports, or name that module under the entry-point group
``hybrid_nas.mixers`` of your package, which every process (the driver, Ray workers, an exported model's module)
loads on ``import search_spaces``. Then ``"mixers": [..., "<kind>"]`` in a ``--space`` file searches it.
"""
from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from search_spaces.spec import MIXER_TYPES, SpecError, mixer_types

if TYPE_CHECKING:
    from torch import nn

    from search_spaces.space import SearchSpace, Trial

__all__ = ["MixerEntry", "MIXERS", "register_mixer", "mixer_entry", "ENTRY_POINT_GROUP", "load_entry_points"]

ENTRY_POINT_GROUP = "hybrid_nas.mixers"
_log = logging.getLogger(__name__)


def _one_position(spec: Any) -> int:
    return 1


@dataclass(frozen=True)
class MixerEntry:
    """Everything the project needs to know about one mixer.

    Attributes:
        spec: its frozen dataclass (``kind`` class variable, defaults, ``validate(width, field)``).
        build_block: ``(width, spec, hidden, index, drop_path) -> nn.Module``, the `index`-th block of a stage
            (0-based): NHWC ``[B, H, W, width]`` in and out, its MLP `hidden` channels wide.
        sample: ``(trial, prefix, width, space) -> spec``: draws the hyper-parameters with Optuna's
            ``trial.suggest_*``, every parameter name starting with `prefix` (``s2_<kind>``).
        choices: ``(space, width) -> specs``: every spec `sample` can return at `width` (the latency tables
            measure each of them).
        period: ``spec -> int``: blocks of a stage repeat with this period in their index (Swin's shifted windows
            on every second block: 2); blocks at the same index modulo it are the same module.
    """
    spec: type
    build_block: Callable[..., "nn.Module"]
    sample: Callable[["Trial", str, int, "SearchSpace"], Any]
    choices: Callable[["SearchSpace", int], Iterable[Any]]
    period: Callable[[Any], int] = _one_position

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def module(self) -> str:
        """The module that defines the spec, which a process imports to know this mixer."""
        return self.spec.__module__

    def position(self, spec: Any, index: int) -> int:
        """Where in its period the `index`-th block of a stage is (0 for mixers whose blocks are all alike)."""
        return index % self.period(spec)


MIXERS: dict[str, MixerEntry] = {}


def register_mixer(entry: MixerEntry, replace: bool = False) -> MixerEntry:
    """Add `entry` (keyed by its spec's ``kind``); `SpecError` for a kind already taken unless `replace`."""
    kind = getattr(entry.spec, "kind", None)
    if not isinstance(kind, str) or not kind.isidentifier():
        raise SpecError(f"mixer spec {entry.spec.__name__}: needs a class variable `kind`, an identifier; got {kind!r}")
    if kind in MIXERS and not replace and MIXERS[kind] != entry:
        raise SpecError(f"mixer kind {kind!r} is already registered (by {MIXERS[kind].module}); pass replace=True")
    MIXERS[kind] = entry
    MIXER_TYPES[kind] = entry.spec  # what ArchSpec's JSON reader and validation accept
    return entry


def mixer_entry(kind: str) -> MixerEntry:
    """The registered entry of `kind`; `SpecError` listing the known kinds otherwise."""
    mixer_types()  # the built-ins and plug-ins, registered on first use
    try:
        return MIXERS[kind]
    except KeyError:
        raise SpecError(f"unknown mixer kind {kind!r}; registered: {', '.join(MIXERS)}") from None


def load_entry_points() -> None:
    """Import every module named under `ENTRY_POINT_GROUP` (they register their mixers); one that fails is
    skipped with one warning line."""
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
        except Exception as error:  # a broken plug-in must not stop the project from importing
            _log.warning("mixer plug-in %s (%s) not loaded: %s: %s", point.name, point.value,
                         type(error).__name__, error)
            continue
        if isinstance(loaded, MixerEntry):
            register_mixer(loaded)
