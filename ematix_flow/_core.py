"""Low-level connections: a :class:`Connection` built from one explicit URL.

This is the escape hatch of spec §1 (``_core.connect("postgres://…")``) and the home of
the :class:`Connection` object and of :func:`redact_dsn`, the one place that knows how to
take a password out of a DSN or out of a driver message. The named-connection registry
(:mod:`ematix_flow.config`) builds on it; the engine, preview and CLI only ever see
``Connection`` objects and their redacted forms.

psycopg is imported inside the functions that need it, so importing ``ematix_flow``
(and starting ``flow --help``) stays cheap.

Example::

    from ematix_flow import _core

    conn = _core.connect("postgresql://app:secret@db.internal:5432/warehouse")
    str(conn)  # 'postgresql://app:***@db.internal:5432/warehouse'
    with conn.open() as pg:
        pg.execute("SELECT 1")
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

from ematix_flow._errors import ConfigurationError, ConnectionFailedError

if TYPE_CHECKING:
    import psycopg

    from ematix_flow._session import Timeouts

__all__ = ["EXPLICIT_URL_ORIGIN", "Connection", "connect", "connection_from_dsn", "redact_dsn"]

#: ``Connection.origin`` of a connection given as a URL in code.
EXPLICIT_URL_ORIGIN = "explicit url"

_MASK = "***"
# ``scheme://user:password@`` — the password is whatever sits between the first ':' of the
# userinfo and the last '@' of the authority (a password with an unencoded '@' is still
# masked whole, though libpq itself would stop at the first '@').
_URL_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@?#\s]*):(?P<pw>[^/?#\s]*)@")
# ``?password=…`` / ``&password=…`` in a URL's query string (and ``sslpassword``, the
# passphrase of a client key).
_URL_QUERY = re.compile(r"(?P<head>[?&](?:ssl)?password=)(?P<pw>[^&#\s]*)", re.IGNORECASE)
# ``password=…`` / ``sslpassword=…`` in a key=value conninfo string, quoted or not.
_CONNINFO = re.compile(
    r"(?P<head>(?<![\w?&])(?:ssl)?password\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s'][^\s]*)",
    re.IGNORECASE,
)
_URL_SCHEME = re.compile(r"^\s*(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://")
_POSTGRES_SCHEMES = ("postgres", "postgresql")


def redact_dsn(text: str, password: str | None = None) -> str:
    """Return ``text`` with every password it carries replaced by ``***``.

    ``text`` is a DSN (URL or key=value) or any message that may quote one (a driver
    error, a log line). Passwords are found by shape (``user:pw@``, ``?password=``,
    ``password=``); when ``password`` is given, every literal occurrence of it (raw or
    URL-encoded) is masked too, which catches drivers that echo it in other forms.

    >>> redact_dsn("postgresql://app:s3cret@db/wh")
    'postgresql://app:***@db/wh'
    >>> redact_dsn("host=db password='s 3' dbname=wh")
    'host=db password=*** dbname=wh'
    """
    if password:
        for form in {password, quote(password, safe=""), quote_plus(password)}:
            text = text.replace(form, _MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m['head']}:{_MASK}@" if m["pw"] else m[0], text)
    text = _URL_QUERY.sub(lambda m: m["head"] + _MASK, text)
    return _CONNINFO.sub(lambda m: m["head"] + _MASK, text)


def _parse_dsn(dsn: str, *, where: str) -> dict[str, str]:
    """Parse a URL or key=value DSN with libpq's own parser; errors never carry the DSN."""
    scheme = _URL_SCHEME.match(dsn)
    if scheme and scheme["scheme"].lower() not in _POSTGRES_SCHEMES:
        raise ConfigurationError(
            f"{where}: the DSN uses the scheme {scheme['scheme']!r}; ematix-flow connects to "
            "PostgreSQL only. Use a postgres:// or postgresql:// URL or a key=value "
            "string such as 'host=db dbname=warehouse user=app'"
        )
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        # libpq quotes the token it choked on, which may be part of a password: keep
        # the reason, drop the quoted text.
        reason = re.sub(
            r'"([^"]*)"',
            lambda m: m[0] if m[1] == "=" else '"…"',
            redact_dsn(str(exc).strip()),
        )
        raise ConfigurationError(
            f"{where}: the DSN is not a valid PostgreSQL URL or key=value connection string "
            f"({reason}). Expected e.g. 'postgresql://user:password@host:5432/dbname' or "
            "'host=… dbname=… user=…'"
        ) from None
    port = params.get("port")
    if port and not all(p.strip().isdigit() for p in str(port).split(",") if p.strip()):
        # Usually a password holding an unencoded '@' or ':': libpq then reads part of
        # it as the port, and its own error would quote that part. Never quote it.
        raise ConfigurationError(
            f"{where}: the DSN's port is not a number. If the password contains '@', ':' "
            "or '/', percent-encode them (%40, %3A, %2F), e.g. "
            "'postgresql://user:p%40ss@host:5432/dbname'"
        )
    return {k: str(v) for k, v in params.items() if v is not None}


@dataclass(frozen=True, repr=False)
class Connection:
    """A resolved database connection: where it points, where it was configured.

    ``dsn`` is a secret and never appears in ``str()``/``repr()``; use ``redacted`` or
    ``describe()`` wherever a connection is shown. Build one with
    :func:`ematix_flow.connect` (named) or :func:`ematix_flow._core.connect` (a URL).

    Example::

        conn = connect("warehouse")
        conn.describe()   # 'warehouse → app@db.internal:5432/wh'
        conn.origin       # 'env EMATIX_FLOW_DSN_WAREHOUSE'
    """

    name: str | None
    dsn: str = field(repr=False)
    origin: str
    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    user: str | None = None

    @property
    def _password(self) -> str | None:
        try:
            return _parse_dsn(self.dsn, where=self.origin).get("password") or None
        except ConfigurationError:
            return None

    @property
    def redacted(self) -> str:
        """The DSN with its password replaced by ``***``."""
        return redact_dsn(self.dsn, self._password)

    @property
    def target(self) -> str:
        """``user@host:port/dbname``, leaving out the parts libpq will default."""
        text = f"{self.user}@" if self.user else ""
        text += self.host or "localhost"
        if self.port is not None:
            text += f":{self.port}"
        return text + f"/{self.dbname or self.user or ''}"

    def describe(self, *, short: bool = False) -> str:
        """``name → user@host:port/dbname`` — the form preview and the CLI print.

        ``short=True``: ``name, database dbname``, for a sentence that names two
        connections (where they point is shown on their own lines; a unix-socket
        directory printed twice only hides the difference)."""
        if short:
            name = self.name or EXPLICIT_URL_ORIGIN
            return f"{name}, database {self.dbname or self.user or '(the user name)'}"
        return f"{self.name or EXPLICIT_URL_ORIGIN} → {self.target}"

    def same_database_as(self, other: Connection) -> bool:
        """True when both point at the same database of the same server.

        Host (a unix-socket directory counts as a host), port and database are compared
        after libpq's defaults (port 5432, database = user name); the user does not
        matter here (:meth:`same_session_as` also compares the role and options). Two
        spellings of one machine (``localhost`` / ``127.0.0.1``) count as different,
        which only costs the faster same-DB path, never correctness.
        """
        return self._identity() == other._identity()

    def _identity(self) -> tuple[str, int, str]:
        return (self.host or "", self.port or 5432, self.dbname or self.user or "")

    def same_session_as(self, other: Connection) -> str | None:
        """``None`` when a session of ``other`` reads exactly what a session of this
        connection would (same server, database, role and session options); otherwise
        what differs, for the plan's reason."""
        if self._param("service") or other._param("service"):
            # the service file decides where it points: it cannot be compared here
            return "server or database (a service= connection is not compared)"
        mine, theirs = self._identity(), other._identity()
        if mine != theirs:
            return "server or database"
        if self._role() != other._role():
            return f"role ({self._role() or 'default'} vs {other._role() or 'default'})"
        if self._options() != other._options():
            return "session options (options=)"
        return None

    def _role(self) -> str:
        return self.user or ""

    def _options(self) -> str:
        return self._param("options")

    def _param(self, name: str) -> str:
        try:
            return _parse_dsn(self.dsn, where=self.origin).get(name, "")
        except ConfigurationError:
            return ""

    def open(self, *, timeouts: Timeouts | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
        """Open a psycopg connection with the session settings every engine session
        runs under (:mod:`ematix_flow._session`: UTF-8, UTC, ISO dates, bounded lock
        waits); other keyword arguments go to :func:`psycopg.connect`.

        A failure raises :class:`ConnectionFailedError` naming this connection and its
        redacted target, with the driver's reason (any password scrubbed from it).
        """
        import psycopg

        from ematix_flow._session import CLIENT_ENCODING, pin

        try:
            conn = psycopg.connect(self.dsn, client_encoding=CLIENT_ENCODING, **kwargs)
        except psycopg.OperationalError as exc:
            password = self._password
            reason = redact_dsn(" ".join(str(exc).split()), password)
            error = ConnectionFailedError(
                f"cannot connect to {self.name or 'the explicit url'!r} "
                f"({self.redacted}, configured in {self.origin}): {reason}"
            )
            if password and password in str(exc):
                raise error from None
            raise error from exc
        try:
            pin(conn, timeouts)
        except ConnectionFailedError as exc:
            conn.close()
            raise ConnectionFailedError(
                f"{self.name or 'the explicit url'!r} ({self.redacted}): {exc}"
            ) from None
        except psycopg.Error as exc:
            conn.close()
            raise ConnectionFailedError(
                f"connected to {self.name or 'the explicit url'!r} ({self.redacted}) but "
                f"could not apply the session settings ematix-flow runs under: "
                f"{redact_dsn(' '.join(str(exc).split()), self._password)}"
            ) from None
        return conn

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"Connection(name={self.name!r}, origin={self.origin!r}, dsn={self.redacted!r})"


def connection_from_dsn(dsn: str, *, name: str | None, origin: str) -> Connection:
    """Build a :class:`Connection` from a DSN, validating it (raises ConfigurationError)."""
    where = f"connection {name!r} ({origin})" if name else origin
    params = _parse_dsn(dsn, where=where)
    port_text = params.get("port")
    port = int(port_text) if port_text and port_text.isdigit() else None
    return Connection(
        name=name,
        dsn=dsn,
        origin=origin,
        host=params.get("host") or params.get("hostaddr"),
        port=port,
        dbname=params.get("dbname"),
        user=params.get("user"),
    )


def connect(url: str) -> Connection:
    """A :class:`Connection` for an explicit URL (``origin == "explicit url"``).

    The low-level escape hatch: no registry lookup. Prefer ``ematix_flow.connect(name)``
    so URLs stay out of code.

    >>> connect("postgresql://app:pw@db:5432/wh").describe()
    'explicit url → app@db:5432/wh'
    """
    return connection_from_dsn(url, name=None, origin=EXPLICIT_URL_ORIGIN)
