"""The embedded PostgreSQL server (the ``pgserver`` wheel) used by ``flow demo``,
``flow dev-db`` and the test suite.

PostgreSQL limits a unix-socket path to about 107 bytes, so data directories live
under a short path; run as root, pgserver runs the server as its own ``pgserver`` user,
so the directory must be writable by that user (a fresh directory under /tmp is).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

__all__ = [
    "EmbeddedServer",
    "per_user_dir",
    "running_uri",
    "server_processes",
    "start_embedded",
    "stop_embedded",
]

_SOCKET_LIMIT = 100


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
        if len(str(path / ".s.PGSQL.5432")) > _SOCKET_LIMIT:
            raise RuntimeError(
                f"embedded PostgreSQL data directory {path} is too long a path for a unix "
                "socket (PostgreSQL's limit is 107 bytes); choose a shorter one"
            )
        handle = pgserver.get_server(path, cleanup_mode=None if keep else "stop")
    return EmbeddedServer(handle, path)


def per_user_dir(*parts: str) -> Path:
    """A per-user directory for embedded servers (``flow dev-db``, ``flow demo``).

    ``$XDG_DATA_HOME/ematix-flow/<parts>`` (default ``~/.local/share``) when that path is
    short enough for a unix socket and has no whitespace (pg_ctl passes it on a command
    line); otherwise ``<tmp>/ematix-flow-<uid>/<parts>``.
    """
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    path = base.joinpath("ematix-flow", *parts)
    too_long = len(str(path / "pgdata" / ".s.PGSQL.5432")) > _SOCKET_LIMIT
    if too_long or any(ch.isspace() for ch in str(path)):
        uid = os.getuid() if hasattr(os, "getuid") else 0
        path = Path(tempfile.gettempdir()).joinpath(f"ematix-flow-{uid}", *parts)
    return path


def _postmaster(datadir: Path) -> Any:
    """The parsed ``postmaster.pid`` of ``datadir`` when its server is running, else None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        from pgserver.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(datadir)
    except (OSError, ValueError, AssertionError):
        return None  # a half-written or stale file: no server we can talk to
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return info


def running_uri(datadir: str | os.PathLike[str], database: str | None = None) -> str | None:
    """The URI of the server running in ``datadir``, or None when none is running."""
    info = _postmaster(Path(datadir).expanduser().resolve())
    return None if info is None else str(info.get_uri(database=database))


def server_processes(datadir: str | os.PathLike[str]) -> list[Any]:
    """The PostgreSQL processes (postmaster and children) serving ``datadir``."""
    import psutil

    path = Path(datadir).expanduser().resolve()
    found = []
    postmasters = set()
    info = _postmaster(path)
    if info is not None:
        postmasters.add(info.pid)
    for proc in psutil.process_iter(attrs=["pid", "ppid", "name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("name") != "postgres" and not (cmdline and "postgres" in cmdline[0]):
            continue
        if str(path) in cmdline or proc.info["pid"] in postmasters:
            found.append(proc)
            postmasters.add(proc.info["pid"])
    found += [
        p
        for p in psutil.process_iter(attrs=["pid", "ppid"])
        if p.info["ppid"] in postmasters and p.info["pid"] not in postmasters
    ]
    return found


def stop_embedded(datadir: str | os.PathLike[str], *, timeout: float = 60.0) -> bool:
    """Stop the server running in ``datadir`` (fast shutdown) and wait until every one of
    its processes has exited. Returns False when no server was running there.
    """
    import psutil

    path = Path(datadir).expanduser().resolve()
    procs = server_processes(path)
    if _postmaster(path) is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver import _commands
            from pgserver.postgres_server import PostgresServer

            user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
            try:
                _commands.pg_ctl(
                    ["-w", "-m", "fast", "stop"], pgdata=path, user=user, timeout=timeout
                )
            except Exception:  # pg_ctl refused or hung (stale pid file): signal it ourselves
                for proc in procs:
                    with contextlib.suppress(psutil.Error):
                        proc.terminate()
            # pgserver caches one handle per data directory and counts the processes using
            # it; the server is gone now, so forget both or a later start in this process
            # would hand back the dead server (and a later stop count stale users).
            handle = PostgresServer._instances.pop(path, None)
            if handle is not None:
                atexit.unregister(handle._cleanup)
            pids = path / ".handle_pids.json"
            if pids.exists():
                pids.write_text("[]")
    if not procs:
        return False
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return True
