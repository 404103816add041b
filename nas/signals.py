"""Stopping a search cleanly: SIGTERM handled as Ctrl-C is, and a cleanup that signals cannot break off."""
from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass
from typing import Iterator

__all__ = ["SearchStopped", "StopSignal", "stop_on_sigterm", "deferred_stops"]


class SearchStopped(KeyboardInterrupt):
    """A signal other than Ctrl-C asked the search to stop (`signum`, e.g. SIGTERM); handled as Ctrl-C is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass
class StopSignal:
    """The signal `stop_on_sigterm` received, if any (None: none, or Ctrl-C)."""
    signum: int | None = None


def _set_handler(signum: int, handler) -> object:
    """`signal.signal`, returning the previous handler as one that can be set again (SIG_DFL for a C handler)."""
    previous = signal.signal(signum, handler)
    return signal.SIG_DFL if previous is None else previous


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[StopSignal]:
    """Inside, SIGTERM interrupts the main thread as Ctrl-C does, so `kill <pid>` stops a search cleanly (in-flight
    trials stored as interrupted, summary written); the signal is recorded in the yielded `StopSignal` (Ray's
    blocking calls turn the handler's exception into a plain KeyboardInterrupt). Only the first SIGTERM raises;
    later ones are recorded, so a repeated `kill` does not break off the cleanup. Replaces Ray's handler, which
    exits at once; the previous one is restored on leaving. Outside the main thread it only yields.
    """
    received = StopSignal()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def stop(signum: int, frame: object) -> None:
        first = received.signum is None
        received.signum = signum
        if first:
            raise SearchStopped(signum)

    previous = _set_handler(signal.SIGTERM, stop)
    try:
        yield received
    finally:
        _set_handler(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred_stops() -> Iterator[None]:
    """Inside, Ctrl-C and SIGTERM are ignored: the cleanup after a stop (storing the in-flight trials, writing the
    summary) runs to its end. Outside the main thread it only yields."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: _set_handler(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            _set_handler(signum, handler)
