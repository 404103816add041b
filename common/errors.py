"""The base of every error that means bad input or an unusable resource: `launch.py` prints it as one line and
exits with status 2. Each floor subclasses it (with the builtin it also is, e.g. ``ValueError``)."""
from __future__ import annotations

__all__ = ["UserFacingError"]


class UserFacingError(Exception):
    """Bad input or an unusable resource (a file, a device, a server); the message is one line a user can act on."""
