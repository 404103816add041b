"""optuna-dashboard on a search's study storage: ``launch.py dashboard --study NAME``.

The dashboard reads the storage live, so it can run beside a search. It binds to 127.0.0.1 unless told otherwise
(it has no authentication: expose it through an SSH tunnel, not a public address).
"""
from __future__ import annotations

import socket
from typing import Callable

from common.errors import UserFacingError
from nas.study import load_study

__all__ = ["DashboardError", "study_url", "check_port", "serve"]


class DashboardError(UserFacingError, RuntimeError):
    """The dashboard cannot start (port taken, bad host); one line says why."""


def study_url(host: str, port: int, study_id: int) -> str:
    """The dashboard page of one study."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard/studies/{study_id}"


def check_port(host: str, port: int) -> None:
    """Raise `DashboardError` unless `host`:`port` can be bound now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            reason = error.strerror or str(error)
            raise DashboardError(f"cannot listen on {host}:{port}: {reason}; pick another --port") from None


def serve(storage_url: str, study: str, host: str = "127.0.0.1", port: int = 8080,
          announce: Callable[[str], None] = print) -> None:
    """Serve optuna-dashboard on `storage_url` until interrupted; `announce` gets the study's URL first.

    Raises:
        StudyError: no such study in the storage (the message lists the ones there).
        DashboardError: the address cannot be bound.
    """
    import optuna_dashboard

    stored = load_study(study, storage_url)
    check_port(host, port)
    announce(f"optuna-dashboard for study {study!r} ({storage_url}): {study_url(host, port, stored._study_id)}")
    optuna_dashboard.run_server(storage_url, host=host, port=port)
