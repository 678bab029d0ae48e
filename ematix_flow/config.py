"""The named-connection registry (spec §3.1): symbolic names → :class:`Connection`.

Pipelines name their connections (``"warehouse"``, ``"oltp"``); this module says what a
name means right now. Resolution, highest priority first:

1. the environment variable ``EMATIX_FLOW_DSN_<NAME>`` (``alt-warehouse`` and
   ``alt_warehouse`` both read ``EMATIX_FLOW_DSN_ALT_WAREHOUSE``);
2. ``EMATIX_FLOW_DSN``, for the connection named ``default`` only;
3. the project-local ``./.ematix-flow.toml`` (the working directory at call time),
   table ``[connections.<name>]``;
4. the user-global ``~/.ematix-flow/connections.toml``, same format;
5. an explicit ``connect(url=...)`` in code (``connect(url=...)`` with no name is just
   that URL).

Config files look like::

    [connections.default]
    dsn = "postgresql://app:secret@db.internal/app"

    [connections.warehouse]
    dsn = "${WAREHOUSE_DSN}"   # ${VAR} is replaced from the environment

Every resolved :class:`Connection` knows its ``origin``; it renders without its
password. The CLI (``flow connections``), the engine and preview call :func:`connect`
and :func:`list_connections`; nothing here prints.

Example::

    from ematix_flow import connect

    conn = connect("warehouse")
    conn.describe()   # 'warehouse → app@db.internal:5432/wh'
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ematix_flow._core import (
    EXPLICIT_URL_ORIGIN,
    Connection,
    connection_from_dsn,
    redact_dsn,
)
from ematix_flow._errors import ConfigurationError, UnknownConnectionError

__all__ = [
    "ENV_PREFIX",
    "PROJECT_FILE",
    "Connection",
    "connect",
    "env_var_name",
    "list_connections",
    "project_config_path",
    "redact_dsn",
    "remove_user_connection",
    "save_user_connection",
    "saved_user_connection",
    "user_config_path",
]

#: Environment variables ``EMATIX_FLOW_DSN_<NAME>``; ``EMATIX_FLOW_DSN`` alone is ``default``.
ENV_PREFIX = "EMATIX_FLOW_DSN"
#: The project-local config file, looked up in the working directory.
PROJECT_FILE = ".ematix-flow.toml"
PROJECT_ORIGIN = "./.ematix-flow.toml"
USER_ORIGIN = "~/.ematix-flow/connections.toml"
DEFAULT_NAME = "default"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
# The suffix of an EMATIX_FLOW_DSN_<NAME> variable that connect() would read.
_ENV_SUFFIX = re.compile(r"[A-Z0-9][A-Z0-9_]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOW_TO = (
    "Configure it with one of: `export {var}=postgresql://user:password@host:5432/db`; "
    'a [connections.{name}] table with a dsn = "…" key in {project} or {user}; '
    "or `flow connections set {name}=postgresql://…`"
)


class _NotGiven:
    def __repr__(self) -> str:
        return repr(DEFAULT_NAME)


_NOT_GIVEN: Any = _NotGiven()


def project_config_path() -> Path:
    """``./.ematix-flow.toml`` in the current working directory (read at call time)."""
    return Path.cwd() / PROJECT_FILE


def user_config_path() -> Path:
    """``~/.ematix-flow/connections.toml`` for the current user (``$HOME``)."""
    return Path.home() / ".ematix-flow" / "connections.toml"


def _canonical(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"invalid connection name {name!r}: a name is ASCII letters, digits, '_' and "
            "'-', starting with a letter or digit (e.g. 'warehouse', 'alt-warehouse'), so "
            f"that it maps to an environment variable {ENV_PREFIX}_<NAME>"
        )
    return name.upper().replace("-", "_")


def env_var_name(name: str) -> str:
    """The environment variable that configures ``name``.

    >>> env_var_name("alt-warehouse")
    'EMATIX_FLOW_DSN_ALT_WAREHOUSE'
    """
    return f"{ENV_PREFIX}_{_canonical(name)}"


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class _FileEntry:
    """One ``[connections.<key>]`` table of one config file, not yet interpolated."""

    key: str
    raw_dsn: Any
    path: Path
    origin: str


def _read_file(path: Path, origin: str) -> dict[str, _FileEntry]:
    """The entries of one config file keyed by canonical name ({} when it is absent)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line N, column M)"; it never quotes values.
        raise ConfigurationError(
            f"{path} is not valid TOML: {exc}. Fix the file or remove it"
        ) from None
    section = data.get("connections", {})
    if not isinstance(section, dict):
        raise ConfigurationError(
            f"{path}: 'connections' must be a table of [connections.<name>] tables"
        )
    entries: dict[str, _FileEntry] = {}
    for key, body in section.items():
        if not isinstance(body, dict) or "dsn" not in body:
            raise ConfigurationError(
                f'{path}: [connections.{key}] must be a table with a dsn = "…" key'
            )
        try:
            canonical = _canonical(key)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{path}: {exc}") from None
        if canonical in entries:
            raise ConfigurationError(
                f"{path}: [connections.{entries[canonical].key}] and [connections.{key}] "
                f"are the same connection (both read {ENV_PREFIX}_{canonical}); keep one"
            )
        entries[canonical] = _FileEntry(key, body["dsn"], path, origin)
    return entries


def _interpolate(entry: _FileEntry) -> str:
    if not isinstance(entry.raw_dsn, str):
        raise ConfigurationError(f"{entry.path}: [connections.{entry.key}] dsn must be a string")

    def replace(match: re.Match[str]) -> str:
        var = match.group(1)
        if not _ENV_NAME.fullmatch(var):
            raise ConfigurationError(
                f"{entry.path}: [connections.{entry.key}] dsn has ${{{var}}}, which is not "
                "a valid environment variable name"
            )
        value = os.environ.get(var)
        if value is None:
            raise ConfigurationError(
                f"{entry.path}: [connections.{entry.key}] dsn uses ${{{var}}}, but the "
                f"environment variable {var} is not set. Export {var} or write the DSN "
                "into the file"
            )
        return value

    return _INTERPOLATION.sub(replace, entry.raw_dsn)


def _from_file(entry: _FileEntry, name: str) -> Connection:
    return connection_from_dsn(_interpolate(entry), name=name, origin=entry.origin)


def _env_value(var: str) -> str | None:
    # An empty variable counts as unset, so `EMATIX_FLOW_DSN_X=` cannot silently mean
    # "libpq defaults".
    return os.environ.get(var) or None


# --------------------------------------------------------------------------- resolution


def connect(name: str = _NOT_GIVEN, url: str | None = None) -> Connection:
    """Resolve a connection by name (spec §3.1 order); see the module docstring.

    ``connect()`` is ``default``; ``connect(url=...)`` alone is that explicit URL;
    ``connect("warehouse", url=...)`` uses the URL only when nothing configures
    ``warehouse``.

    Example (with ``EMATIX_FLOW_DSN_WAREHOUSE=postgresql://app:pw@wh/dw`` exported)::

        connect("warehouse").origin   # 'env EMATIX_FLOW_DSN_WAREHOUSE'
        connect("warehouse").redacted  # 'postgresql://app:***@wh/dw'

    Raises :class:`UnknownConnectionError` (listing every place looked) when nothing
    configures the name, and :class:`ConfigurationError` for a bad name, a malformed
    file, an unset ``${VAR}`` or an invalid DSN.
    """
    if name is _NOT_GIVEN:
        if url is not None:
            return connection_from_dsn(url, name=None, origin=EXPLICIT_URL_ORIGIN)
        name = DEFAULT_NAME
    canonical = _canonical(name)
    var = f"{ENV_PREFIX}_{canonical}"

    value = _env_value(var)
    if value is not None:
        return connection_from_dsn(value, name=name, origin=f"env {var}")
    if canonical == DEFAULT_NAME.upper():
        value = _env_value(ENV_PREFIX)
        if value is not None:
            return connection_from_dsn(value, name=name, origin=f"env {ENV_PREFIX}")
    project, user = project_config_path(), user_config_path()
    for path, origin in ((project, PROJECT_ORIGIN), (user, USER_ORIGIN)):
        entry = _read_file(path, origin).get(canonical)
        if entry is not None:
            return _from_file(entry, name)
    if url is not None:
        return connection_from_dsn(url, name=name, origin=EXPLICIT_URL_ORIGIN)

    looked = [f"environment variable {var}"]
    if canonical == DEFAULT_NAME.upper():
        looked.append(f"environment variable {ENV_PREFIX}")
    looked += [f"[connections.{name}] in {project}", f"[connections.{name}] in {user}"]
    known = sorted(c.name for c in _scan_names())
    raise UnknownConnectionError(
        f"no connection named {name!r} is configured. Looked in: "
        + "; ".join(looked)
        + ". "
        + _HOW_TO.format(var=var, name=name, project=project, user=user)
        + (f". Configured names: {', '.join(known)}" if known else "")
    )


@dataclass(frozen=True)
class ConfiguredConnection:
    """One configured name for listings: its winning origin and either the resolved
    connection or the error that resolving it raised (``flow connections list`` shows
    broken entries instead of stopping at the first)."""

    name: str
    origin: str
    connection: Connection | None
    error: str | None


@dataclass(frozen=True)
class _Candidate:
    name: str
    origin: str
    env_value: str | None = None
    entry: _FileEntry | None = None


def _scan_names() -> list[_Candidate]:
    """Every configured name with its winning source, by precedence; sorted by name."""
    found: dict[str, _Candidate] = {}
    for var in sorted(os.environ):
        value = _env_value(var)
        if value is None:
            continue
        if var == ENV_PREFIX:
            canonical = DEFAULT_NAME.upper()
        elif var.startswith(ENV_PREFIX + "_") and _ENV_SUFFIX.fullmatch(var[len(ENV_PREFIX) + 1 :]):
            canonical = var[len(ENV_PREFIX) + 1 :]
        else:
            continue
        # EMATIX_FLOW_DSN_DEFAULT beats EMATIX_FLOW_DSN (level 1 before level 2).
        if canonical in found and var == ENV_PREFIX:
            continue
        found[canonical] = _Candidate(canonical.lower(), f"env {var}", env_value=value)
    for path, origin in (
        (project_config_path(), PROJECT_ORIGIN),
        (user_config_path(), USER_ORIGIN),
    ):
        for canonical, entry in _read_file(path, origin).items():
            found.setdefault(canonical, _Candidate(entry.key, origin, entry=entry))
    return sorted(found.values(), key=lambda c: c.name)


def _resolve(candidate: _Candidate) -> Connection:
    if candidate.entry is not None:
        return _from_file(candidate.entry, candidate.name)
    assert candidate.env_value is not None  # a candidate comes from a file or the env
    return connection_from_dsn(candidate.env_value, name=candidate.name, origin=candidate.origin)


def configured_connections() -> list[ConfiguredConnection]:
    """Every configured name, resolved where possible; per-entry errors are kept.

    A malformed config file still raises :class:`ConfigurationError`: nothing in it
    can be listed.
    """
    result = []
    for candidate in _scan_names():
        try:
            conn, error = _resolve(candidate), None
        except ConfigurationError as exc:
            conn, error = None, str(exc)
        result.append(ConfiguredConnection(candidate.name, candidate.origin, conn, error))
    return result


def list_connections() -> list[Connection]:
    """Every configured connection (environment and both files), sorted by name.

    Each name appears once, resolved from the source that wins for it. Raises
    :class:`ConfigurationError` when any configured entry cannot be resolved.

    >>> [c.describe() for c in list_connections()]  # doctest: +SKIP
    ['default → app@localhost:5432/app', 'warehouse → app@wh:5432/dw']
    """
    return [_resolve(candidate) for candidate in _scan_names()]


# --------------------------------------------------------------------------- writing


def save_user_connection(name: str, dsn: str) -> Path:
    """Write ``[connections.<name>] dsn = "<dsn>"`` into the user-global file.

    Other entries, comments and formatting are kept (tomlkit). The file is written
    atomically with mode 0600 in a directory with mode 0700; an entry that is the same
    connection under another spelling (``alt-warehouse`` / ``alt_warehouse``) is
    updated in place. Returns the file's path. ``flow connections set`` calls this.
    """
    import tomlkit
    from tomlkit.exceptions import ParseError

    canonical = _canonical(name)
    if "${" not in dsn:  # an interpolated DSN is checked when it is resolved
        connection_from_dsn(dsn, name=name, origin="the DSN given")
    path = user_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    try:
        doc = tomlkit.parse(text)
    except ParseError as exc:
        raise ConfigurationError(
            f"{path} is not valid TOML (line {exc.line}, column {exc.col}); fix or remove "
            "it before `flow connections set` writes to it"
        ) from None
    section = doc.get("connections")
    if section is None:
        section = tomlkit.table(is_super_table=True)
        doc["connections"] = section
    elif not isinstance(section, dict):
        raise ConfigurationError(
            f"{path}: 'connections' must be a table of [connections.<name>] tables"
        )
    key = next((k for k in section if _NAME.fullmatch(k) and _canonical(k) == canonical), name)
    entry = section.get(key)
    if isinstance(entry, dict):
        entry["dsn"] = dsn
    else:
        table = tomlkit.table()
        table["dsn"] = dsn
        section[key] = table
    _write_private(path, tomlkit.dumps(doc))
    return path


def saved_user_connection(name: str) -> str | None:
    """The DSN saved for ``name`` in the user-global file, as written (``${VAR}`` not
    replaced; it may hold a password: redact it before showing it), or ``None``."""
    entry = _read_file(user_config_path(), USER_ORIGIN).get(_canonical(name))
    return None if entry is None else str(entry.raw_dsn)


def remove_user_connection(name: str) -> Path | None:
    """Delete ``[connections.<name>]`` (any spelling of ``name``) from the user-global
    file, keeping the other entries and comments; the file's path, or ``None`` when it
    holds no such entry. ``flow connections remove`` calls this."""
    import tomlkit

    canonical = _canonical(name)
    path = user_config_path()
    if canonical not in _read_file(path, USER_ORIGIN):  # also: the file is valid TOML
        return None
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    section = doc["connections"]
    for key in [k for k in section if _NAME.fullmatch(k) and _canonical(k) == canonical]:
        del section[key]
    _write_private(path, tomlkit.dumps(doc))
    return path


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, file 0600, directory 0700."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def overriding_sources(name: str) -> list[str]:
    """The places that configure ``name`` with a higher priority than the user file
    (environment variables, the project file) — what ``flow connections set`` warns of."""
    canonical = _canonical(name)
    found = []
    var = f"{ENV_PREFIX}_{canonical}"
    if _env_value(var) is not None:
        found.append(f"env {var}")
    if canonical == DEFAULT_NAME.upper() and _env_value(ENV_PREFIX) is not None:
        found.append(f"env {ENV_PREFIX}")
    if canonical in _read_file(project_config_path(), PROJECT_ORIGIN):
        found.append(PROJECT_ORIGIN)
    return found
