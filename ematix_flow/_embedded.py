"""The embedded PostgreSQL server (the ``pgserver`` wheel) used by ``flow demo``,
``flow dev-db`` and the test suite.

PostgreSQL limits a unix-socket path to about 107 bytes, so data directories live
under a short path; run as root, pgserver runs the server as its own ``pgserver`` user,
so the directory must be writable by that user (a fresh directory under /tmp is).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedServer", "start_embedded"]


class EmbeddedServer:
    """A running embedded server: ``uri`` connects to its ``postgres`` database."""

    def __init__(self, handle: Any, datadir: Path) -> None:
        self._handle = handle
        self.datadir = datadir

    @property
    def uri(self) -> str:
        return str(self._handle.get_uri())

    def database_uri(self, database: str) -> str:
        return str(self._handle.get_uri(database))

    def stop(self) -> None:
        self._handle.cleanup()


def start_embedded(
    datadir: str | os.PathLike[str] | None = None, *, keep: bool = False
) -> EmbeddedServer:
    """Start (or attach to) an embedded PostgreSQL 16 in ``datadir``.

    ``keep=True`` leaves it running after this process exits (``flow dev-db``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        path = Path(datadir) if datadir else Path(tempfile.mkdtemp(prefix="efpg"))
        path.mkdir(parents=True, exist_ok=True)
        if len(str(path / ".s.PGSQL.5432")) > 100:
            raise RuntimeError(
                f"embedded PostgreSQL data directory {path} is too long a path for a unix "
                "socket (PostgreSQL's limit is 107 bytes); choose a shorter one"
            )
        handle = pgserver.get_server(path, cleanup_mode=None if keep else "stop")
    return EmbeddedServer(handle, path)
