"""The settings every database session of ematix-flow runs under, pinned in one place.

Production servers set ``DateStyle``, ``TimeZone``, ``IntervalStyle``, ``bytea_output``,
``extra_float_digits`` and the client encoding per database, per role or per client
(``PGOPTIONS``, ``PGTZ``, ``PGCLIENTENCODING``). Each of them changes the text a value
is shown as, and a value's text is what crosses sessions in places (a stored watermark
read back by another run; a value cast to ``text`` on one path and on the other). A run
must give the same answer whatever the server's settings, so every session the engine,
preview, state and history reads open — source and target — goes through
:meth:`ematix_flow._core.Connection.open`, which connects with ``client_encoding=UTF8``
and then applies :data:`PINNED` and the run's timeouts in one round trip
(:func:`pin`). ``search_path`` is *not* pinned: the source query means what it means to
the source connection's role, and every name the engine writes is schema-qualified.

Timeouts: every statement runs under ``lock_timeout`` (default 30 s; per pipeline or
target with ``lock_timeout=``, or ``EMATIX_FLOW_LOCK_TIMEOUT`` in seconds) and, when
set, ``statement_timeout`` (``statement_timeout=`` / ``EMATIX_FLOW_STATEMENT_TIMEOUT``).
A value of 0 means no limit, as in PostgreSQL.

Example::

    from ematix_flow._session import Timeouts, resolve_timeouts

    resolve_timeouts(lock_timeout=5)      # Timeouts(lock_s=5.0, statement_s=None)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ematix_flow._errors import ConfigurationError, ConnectionFailedError, DefinitionError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DEFAULT_LOCK_TIMEOUT_S",
    "LOCK_TIMEOUT_ENV",
    "OLDEST_SERVER",
    "PINNED",
    "STATEMENT_TIMEOUT_ENV",
    "Timeouts",
    "pin",
    "resolve_timeouts",
    "timeout_seconds",
]

#: Settings that change how values read, print, compare or hash; pinned in every session.
PINNED: tuple[tuple[str, str], ...] = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("bytea_output", "hex"),
    ("extra_float_digits", "3"),
    ("standard_conforming_strings", "on"),
    ("lc_monetary", "C"),
    ("default_transaction_isolation", "read committed"),
)
#: The client encoding of every session: text crosses databases as UTF-8, and each
#: server converts to and from its own encoding (and refuses what it cannot hold).
CLIENT_ENCODING = "UTF8"

#: ``server_version_num`` of the oldest PostgreSQL supported.
OLDEST_SERVER = 140000

DEFAULT_LOCK_TIMEOUT_S = 30.0
LOCK_TIMEOUT_ENV = "EMATIX_FLOW_LOCK_TIMEOUT"
STATEMENT_TIMEOUT_ENV = "EMATIX_FLOW_STATEMENT_TIMEOUT"


@dataclass(frozen=True)
class Timeouts:
    """Seconds a statement may wait for a lock / run; ``None`` = no limit."""

    lock_s: float | None = DEFAULT_LOCK_TIMEOUT_S
    statement_s: float | None = None

    def settings(self) -> tuple[tuple[str, str], ...]:
        return (
            ("lock_timeout", _ms(self.lock_s)),
            ("statement_timeout", _ms(self.statement_s)),
        )


def _ms(seconds: float | None) -> str:
    return "0" if not seconds else f"{max(1, round(seconds * 1000))}ms"


def timeout_seconds(value: Any, *, what: str, where: str) -> float | None:
    """A timeout given as seconds (int/float) or a ``timedelta``; 0 → ``None`` (no limit).

    >>> timeout_seconds(timedelta(minutes=1), what="lock_timeout=", where="target t")
    60.0
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise DefinitionError(
            f"{where}: {what} takes seconds (e.g. {what}10) or a datetime.timedelta "
            f"(0 for no limit), got {value!r}"
        )
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise DefinitionError(f"{where}: {what} must be 0 (no limit) or positive, got {value!r}")
    return seconds or None


def _env_seconds(name: str) -> float | bool | None:
    """The variable's seconds (``None``: 0, no limit); ``False`` when it is not set."""
    text = os.environ.get(name, "").strip()
    if not text:
        return False
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ConfigurationError(
            f"{name}={text!r} is not a number of seconds; set e.g. {name}=30 (0 for no limit)"
        )
    return seconds or None


def resolve_timeouts(
    *, lock_timeout: float | bool | None = False, statement_timeout: float | bool | None = False
) -> Timeouts:
    """Timeouts from the options (``False``: not given), else the environment, else the
    defaults (lock 30 s, statement none)."""
    lock = lock_timeout if lock_timeout is not False else _env_seconds(LOCK_TIMEOUT_ENV)
    stmt = (
        statement_timeout if statement_timeout is not False else _env_seconds(STATEMENT_TIMEOUT_ENV)
    )
    return Timeouts(
        lock_s=DEFAULT_LOCK_TIMEOUT_S if lock is False else lock,  # type: ignore[arg-type]
        statement_s=None if stmt is False else stmt,  # type: ignore[arg-type]
    )


def _version_text(number: int) -> str:
    """``server_version_num`` as people write it: 130023 → 13.23, 90624 → 9.6.24."""
    if number >= 100000:
        return f"{number // 10000}.{number % 10000}"
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def pin(conn: psycopg.Connection[Any], timeouts: Timeouts | None = None) -> None:
    """Apply :data:`PINNED` and ``timeouts`` to the session (one round trip, session
    level, so they hold for every transaction of this connection).

    A server older than :data:`OLDEST_SERVER` is refused first, before any statement:
    the engine relies on 14's semantics (``reltuples = -1`` for a table never
    analyzed, ``extract(epoch …)`` as numeric, ``to_regnamespace``)."""
    number = conn.info.server_version
    if number < OLDEST_SERVER:
        raise ConnectionFailedError(
            f"the server runs PostgreSQL {_version_text(number)}; ematix-flow needs "
            f"PostgreSQL {OLDEST_SERVER // 10000} or later (supported: 14 to 18). Nothing "
            "was written. Upgrade the server, or point the connection at a newer one."
        )
    settings = PINNED + (timeouts or resolve_timeouts()).settings()
    calls = ", ".join("set_config(%s, %s, false)" for _ in settings)
    params = [v for pair in settings for v in pair]
    if conn.autocommit:
        conn.execute(f"SELECT {calls}", params)
    else:
        with conn.transaction():
            conn.execute(f"SELECT {calls}", params)
