"""The Ray session of a search: a local one in a temporary folder (removed after), or a running cluster
checked to answer before anything is created."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

from common.errors import UserFacingError

__all__ = ["RayUnavailableError", "ray_session", "check_ray_address"]

_log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[1]  # on the workers' PYTHONPATH


class RayUnavailableError(UserFacingError, RuntimeError):
    """Ray cannot be started here, or nothing answers at the cluster address; one line says what to start."""


@contextlib.contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[None]:
    """Ray for one search: a local instance with `workers` CPUs (its session folder in a temporary folder of its
    own, removed after), or the cluster at `address`; shut down after (unless Ray was already initialised by the
    caller)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 writes an auth token to ~ otherwise
    import ray

    if ray.is_initialized():
        yield
        return
    options = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    session_folder = None if address else tempfile.mkdtemp(prefix="ray-hnas-")  # not /tmp/ray, kept forever
    try:
        if address:
            ray.init(address=address, **options)
        else:  # workers import this project from its folder even where it is not pip-installed
            path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
            # address="local": a new instance even where `ray start` left a cluster address behind
            ray.init(address="local", num_cpus=workers, include_dashboard=False, _temp_dir=session_folder,
                     runtime_env={"env_vars": {"PYTHONPATH": path}}, **options)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError... for a bad address
        _remove_session_folder(session_folder)
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise RayUnavailableError(f"cannot start or reach {where}: {str(error).splitlines()[0]}") from None
    try:
        yield
    finally:
        ray.shutdown()
        _remove_session_folder(session_folder)


def _remove_session_folder(folder: str | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def check_ray_address(address: str, wait_s: float = 10.0) -> None:
    """`RayUnavailableError` unless something listens at the Ray address ``host:port`` (or ``ray://host:port``) within
    `wait_s` (a head still starting gets that long); Ray's own ``init`` retries a dead address for minutes.
    ``auto`` (a cluster this machine started) is left to Ray."""
    target = address.removeprefix("ray://")
    if target == "auto" or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=max(0.5, wait_s / 4)):
                return
        except (OSError, ValueError) as error:
            if isinstance(error, OSError) and time.monotonic() < deadline:
                time.sleep(0.25)
                continue
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise RayUnavailableError(f"no Ray cluster answers at {address} ({reason}); start one there "
                                      f"(ray start --head --port {port}) or leave out --ray-address for a local "
                                      f"Ray") from None
