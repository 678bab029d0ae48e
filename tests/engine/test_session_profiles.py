"""A run's result does not depend on the session settings of the server, the database,
the role or the client.

Production servers set ``DateStyle``, ``TimeZone``, ``IntervalStyle``, ``bytea_output``
and ``extra_float_digits`` per database and per role, and clients bring their own
(``PGOPTIONS``, ``PGTZ``). The same pipelines over the same data must leave the same
targets, watermarks and run history whatever those are. Each test runs every mode
(append, merge, scd1, scd2), incremental on a ``timestamptz``, a ``timestamp``, a
``date`` and a ``bigint`` column, over four rounds (load; new rows later than the
watermark; changed rows; nothing new) through one path, under one foreign profile:

- ``client``: ``PGOPTIONS`` (SQL/DMY dates, New York time, sql_standard intervals,
  escaped bytea, ``extra_float_digits=0``) and ``PGTZ=Asia/Kolkata`` in the client's
  environment;
- ``database``: the same kind of settings by ``ALTER DATABASE … SET`` on the source and
  the warehouse database (Pacific/Chatham, postgres_verbose intervals);
- ``role``: the engine connects as a fresh role whose ``ALTER ROLE … SET`` settings are
  German/DMY dates, Asia/Kathmandu, iso_8601 intervals;
- ``drifting``: only the warehouse database has foreign settings (``ALTER DATABASE``),
  so the source and the warehouse sessions disagree, and every other round the client
  overrides them (``PGOPTIONS``: ISO dates, UTC, the default styles), so consecutive
  runs of one pipeline disagree too.

It compares with the same rounds run under default settings (the baseline): the
per-run counts ``pipeline.sync`` returns (``rows_unchanged`` included), the target rows
(business columns and the row hash; ``is_current`` and the number of versions per key
for scd2), the stored watermark after every round (read in a session pinned to ISO
dates and UTC) and the counts in ``run_history``. Values that depend on when a run ran
(``valid_from``, ``valid_to``, ``_loaded_at``, batch ids) are left out.

The data makes the settings matter: event times in several months on days ≤ 12 (a
``04/03/2024`` read with the wrong field order is three weeks off), a ``timestamptz``
a quarter of an hour before midnight UTC as the first watermark, ``interval``,
``bytea`` and ``double precision`` columns (text forms that change with the settings,
and a float change visible only beyond 15 digits), ``timestamptz`` and ``timestamp``
source columns feeding a target column of the other kind, and NULLs.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ematix_flow import _core, pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import (
    BigInt,
    Bytea,
    Column,
    Date,
    DoublePrecision,
    Interval,
    Text,
    Timestamp,
    TimestampTZ,
)

pytestmark = pytest.mark.db

PATHS = ("same_db", "cross_db")
MODES = ("append", "merge", "scd1", "scd2")
#: incremental column type → the source (and target) column of that type
INCREMENTAL = {"timestamptz": "ts_tz", "timestamp": "ts", "date": "d", "bigint": "seq"}
PROFILES = ("client", "database", "role", "drifting")

#: Every libpq variable that could carry session settings into a connection.
CLIENT_VARIABLES = ("PGOPTIONS", "PGTZ", "PGDATESTYLE", "PGCLIENTENCODING")
#: The test's own sessions read and write in these settings, whatever the profile.
PINNED = {
    "datestyle": "ISO, MDY",
    "timezone": "UTC",
    "intervalstyle": "postgres",
    "bytea_output": "hex",
    "extra_float_digits": "3",
}

CLIENT_OPTIONS = (
    "-c DateStyle=SQL,DMY -c TimeZone=America/New_York -c IntervalStyle=sql_standard "
    "-c bytea_output=escape -c extra_float_digits=0"
)
DATABASE_SETTINGS = {
    "datestyle": "SQL, DMY",
    "timezone": "Pacific/Chatham",
    "intervalstyle": "postgres_verbose",
    "bytea_output": "escape",
    "extra_float_digits": "0",
}
ROLE_SETTINGS = {
    "datestyle": "German, DMY",
    "timezone": "Asia/Kathmandu",
    "intervalstyle": "iso_8601",
    "bytea_output": "escape",
    "extra_float_digits": "0",
}
#: The ``drifting`` profile's even rounds: the client asks for the usual defaults.
DEFAULT_OPTIONS = (
    "-c DateStyle=ISO,MDY -c TimeZone=UTC -c IntervalStyle=postgres "
    "-c bytea_output=hex -c extra_float_digits=1"
)

SOURCE_DDL = (
    "CREATE SCHEMA app",
    "CREATE TABLE app.events (id bigint PRIMARY KEY, name text, ts_tz timestamptz, "
    "ts timestamp, d date, seq bigint, dur interval, blob bytea, score double precision)",
)
QUERY = (
    "SELECT id, name, ts_tz, ts, d, seq, dur, blob, score, "
    "ts_tz AS wall_utc, ts AS naive_as_tz FROM app.events"
)
BUSINESS = "id, name, ts_tz, ts, d, seq, dur::text AS dur, blob, score, wall_utc, naive_as_tz"


def _columns(keyed: bool) -> dict[str, Column]:
    return {
        "id": Column(BigInt(), nullable=False, primary_key=keyed),
        "name": Column(Text()),
        "ts_tz": Column(TimestampTZ()),
        "ts": Column(Timestamp()),
        "d": Column(Date()),
        "seq": Column(BigInt()),
        "dur": Column(Interval()),
        "blob": Column(Bytea()),
        "score": Column(DoublePrecision()),
        # timestamptz → timestamp and timestamp → timestamptz on the way in
        "wall_utc": Column(Timestamp()),
        "naive_as_tz": Column(TimestampTZ()),
    }


def _target(mode: str, kind: str) -> type[ManagedTable]:
    name = f"{mode}_{kind}"
    attrs: dict[str, Any] = {"__schema__": "wh", "__tablename__": name}
    attrs.update(_columns(keyed=mode != "append"))
    return type(name, (ManagedTable,), attrs)


TARGETS = {(mode, kind): _target(mode, kind) for mode in MODES for kind in INCREMENTAL}


@dataclass(frozen=True)
class Event:
    id: int
    at: datetime  # UTC: ts_tz; its wall clock is ts, its date d
    seq: int
    name: str | None = None
    dur: str | None = None
    blob: bytes | None = None
    score: float | None = None

    def params(self) -> tuple[Any, ...]:
        naive = self.at.replace(tzinfo=None)
        return (
            self.id,
            self.name,
            self.at,
            naive,
            naive.date(),
            self.seq,
            self.dur,
            self.blob,
            self.score,
        )


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# Round 1: the load. The last event, 23:45 UTC on 4 March, is the first watermark: in
# DMY it prints as 04/03/2024, which is 3 April when read back month first, and it is
# already 5 March in Asia, Chatham or Kathmandu.
LOAD = (
    Event(1, utc(2024, 1, 5, 9, 15), 1, "Ann", "1 day 02:03:04.5", b"\x00\x01\xfe\xff", 1 / 3),
    Event(2, utc(2024, 2, 3), 2),
    Event(3, utc(2024, 3, 4, 10), 3, "Çé ✓", "-1 mons +3 days -00:00:01", b"a\\b'", 0.3),
    Event(4, utc(2024, 3, 4, 23, 45, 0, 250000), 4, "Dee", "1 year 2 mons", b"", 1e-7),
)
# Round 2: later than the watermark; three of them fall between 4 March and 3 April.
NEW = (
    Event(5, utc(2024, 3, 10, 8), 5, "Eve", "00:00:00.000001", b"\\x41", 2.5e-300),
    Event(6, utc(2024, 4, 1, 0, 30), 6, "Fay", "-2 days +04:00:00", b"\x7f\x80", -0.1),
    Event(7, utc(2024, 4, 2, 23, 59, 59, 999999), 7, "Gus", "3 mons -1 days", b"\n", 123.456),
    Event(8, utc(2024, 5, 1, 12), 8, "Hal", "7 days", b"\x00", 0.3),
)
# Round 3: two rows change (and move past the watermark), the row at the watermark
# changes in its 17th significant digit only (0.3 → 0.30000000000000004), two arrive.
CHANGED = (
    Event(2, utc(2024, 6, 7, 6), 9, "Bo", "02:00:00", b"\x00\x00", 2.5),
    Event(6, utc(2024, 7, 8, 18, 30), 10, "Fay", "-2 days +04:00:00", b"\x7f\x81", -0.1),
    Event(8, utc(2024, 5, 1, 12), 8, "Hal", "7 days", b"\x00", 0.1 + 0.2),
    Event(9, utc(2024, 8, 9, 23, 30), 11, "Ivy", "1 mon", b"\xff", 1e16),
    Event(10, utc(2024, 9, 10, 0, 0, 0, 1), 12, None, "-00:00:00.5", None, 5e-324),
)
ROUNDS: tuple[tuple[Event, ...], ...] = (LOAD, NEW, CHANGED, ())

COUNTS = ("status", "path", "rows_inserted", "rows_updated", "rows_deleted", "rows_unchanged")


def pinned(url: str) -> psycopg.Connection[Any]:
    """A session of the test itself: fixed settings, whatever the profile sets (``SET``
    after connecting, as ``PGTZ``/``PGDATESTYLE`` would override startup options)."""
    conn = psycopg.connect(url, autocommit=True)
    for name, value in PINNED.items():
        conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    return conn


def dbname(url: str) -> str:
    return str(conninfo_to_dict(url)["dbname"])


def alter_database(server_url: str, database: str, settings: dict[str, str]) -> None:
    with pinned(server_url) as c:
        for name, value in settings.items():
            c.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(database), sql.Identifier(name), sql.Literal(value)
                )
            )


Key = tuple[str, str]  # (mode, incremental column type)


@dataclass
class Outcome:
    """Everything a scenario leaves, per target."""

    counts: dict[Key, list[tuple[Any, ...]]] = field(default_factory=dict)
    #: per round: (pipeline, column_name, value) of the stored watermark
    watermarks: dict[Key, list[tuple[Any, ...] | None]] = field(default_factory=dict)
    columns: dict[Key, list[str]] = field(default_factory=dict)
    rows: dict[Key, list[tuple[Any, ...]]] = field(default_factory=dict)
    versions: dict[Key, dict[int, int]] = field(default_factory=dict)
    history: dict[Key, list[tuple[Any, ...]]] = field(default_factory=dict)


@dataclass
class Scenario:
    """Four rounds of every mode × incremental column through one path.

    ``source_url``/``warehouse_url`` are where the test writes and reads (pinned
    sessions); ``engine_source``/``engine_warehouse`` are the URLs the engine connects
    with; ``before_round(i)`` applies whatever the profile changes between rounds.
    """

    path: str
    source_url: str
    warehouse_url: str
    engine_source: str
    engine_warehouse: str
    before_round: Callable[[int], None] | None = None

    @property
    def data_url(self) -> str:
        # same-DB: the source table lives in the warehouse database
        return self.source_url if self.path == "cross_db" else self.warehouse_url

    def create_source(self, grant_to: str | None = None) -> None:
        with pinned(self.data_url) as c:
            for stmt in SOURCE_DDL:
                c.execute(stmt)
            if grant_to:
                role = sql.Identifier(grant_to)
                c.execute(sql.SQL("GRANT USAGE ON SCHEMA app TO {}").format(role))
                c.execute(sql.SQL("GRANT SELECT ON app.events TO {}").format(role))

    def write(self, events: tuple[Event, ...]) -> None:
        if not events:
            return
        with pinned(self.data_url) as c, c.cursor() as cur:
            cur.executemany(
                "INSERT INTO app.events VALUES (%s, %s, %s, %s, %s, %s, %s::interval, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, ts_tz = EXCLUDED.ts_tz, "
                "ts = EXCLUDED.ts, d = EXCLUDED.d, seq = EXCLUDED.seq, dur = EXCLUDED.dur, "
                "blob = EXCLUDED.blob, score = EXCLUDED.score",
                [e.params() for e in events],
            )

    def run(self) -> Outcome:
        out = Outcome()
        source = _core.connect(self.engine_source)
        warehouse = _core.connect(self.engine_warehouse)
        for i, events in enumerate(ROUNDS, start=1):
            self.write(events)
            if self.before_round:
                self.before_round(i)
            for (mode, kind), target in TARGETS.items():
                result = pipeline.sync(
                    target=target,
                    source=Source.postgres_query(source, QUERY),
                    target_connection=warehouse,
                    mode=mode,
                    keys=None if mode == "append" else ("id",),
                    incremental_column=INCREMENTAL[kind],
                    force_path=self.path,
                )
                out.counts.setdefault((mode, kind), []).append(tuple(result[k] for k in COUNTS))
            stored = self.watermarks()
            for key in TARGETS:
                out.watermarks.setdefault(key, []).append(stored.get(f"wh.{key[0]}_{key[1]}"))
        self.collect(out)
        return out

    def watermarks(self) -> dict[str, tuple[Any, ...]]:
        with pinned(self.warehouse_url) as c:  # DateStyle ISO, TimeZone UTC
            rows = c.execute(
                "SELECT pipeline, target, column_name, value FROM ematix_flow.watermarks"
            ).fetchall()
        return {target: (pipeline_, column, value) for pipeline_, target, column, value in rows}

    def collect(self, out: Outcome) -> None:
        with pinned(self.warehouse_url) as c:
            for mode, kind in TARGETS:
                table = sql.Identifier("wh", f"{mode}_{kind}")
                cols = BUSINESS
                order = "id, seq, name"
                if mode in ("scd1", "scd2"):
                    cols += ", row_hash"
                if mode == "scd2":
                    cols += ", is_current"
                    order = "id, valid_from"
                cur = c.execute(
                    sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
                        sql.SQL(cols), table, sql.SQL(order)
                    )
                )
                out.rows[mode, kind] = cur.fetchall()
                out.columns[mode, kind] = [d.name for d in cur.description or ()]
                if mode == "scd2":
                    out.versions[mode, kind] = dict(
                        c.execute(
                            sql.SQL("SELECT id, count(*) FROM {} GROUP BY id ORDER BY id").format(
                                table
                            )
                        ).fetchall()
                    )
            for target, mode, status, path, *numbers in c.execute(
                "SELECT target, mode, status, path, rows_inserted, rows_updated, "
                "rows_deleted, rows_unchanged FROM ematix_flow.run_history ORDER BY id"
            ).fetchall():
                kind = target.removeprefix(f"wh.{mode}_")
                out.history.setdefault((mode, kind), []).append((status, path, *numbers))


def _row_differences(
    columns: list[str], got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]
) -> list[str]:
    if len(got) != len(want):
        ids_got, ids_want = Counter(r[0] for r in got), Counter(r[0] for r in want)
        return [
            f"{len(got)} rows, baseline {len(want)} (rows per id not in the baseline: "
            f"{dict(ids_got - ids_want)}, missing: {dict(ids_want - ids_got)})"
        ]
    found = []
    for i, name in enumerate(columns):
        differ = [(g, w) for g, w in zip(got, want, strict=True) if g[i] != w[i]]
        if differ:
            g, w = differ[0]
            found.append(
                f"{name} differs in {len(differ)} rows, e.g. id {w[0]}: {g[i]!r}, baseline {w[i]!r}"
            )
    return found


def differences(got: Outcome, want: Outcome) -> list[str]:
    """What differs from the baseline, one line per target and aspect."""
    found: list[str] = []
    for key in TARGETS:
        label = "/".join(key)
        for i, (g, w) in enumerate(zip(got.counts[key], want.counts[key], strict=True), 1):
            if g != w:
                found.append(f"{label}: round {i} sync {COUNTS[2:]} = {g[2:]}, baseline {w[2:]}")
                if g[:2] != w[:2]:
                    found.append(f"{label}: round {i} status, path {g[:2]}, baseline {w[:2]}")
        for i, (g, w) in enumerate(zip(got.watermarks[key], want.watermarks[key], strict=True), 1):
            if g != w:
                found.append(f"{label}: round {i} watermark {g}, baseline {w}")
        if got.versions.get(key) != want.versions.get(key):
            found.append(
                f"{label}: versions per id {got.versions.get(key)}, "
                f"baseline {want.versions.get(key)}"
            )
        for line in _row_differences(got.columns[key], got.rows[key], want.rows[key]):
            found.append(f"{label}: target {line}")
        if got.history.get(key) != want.history.get(key):
            found.append(
                f"{label}: run_history (status, path, inserted, updated, deleted, "
                f"unchanged) {got.history.get(key)}, baseline {want.history.get(key)}"
            )
    return found


def _create_pair(server_url: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    urls = []
    with pinned(server_url) as c:
        for suffix in ("src", "wh"):
            name = f"t_{tag}_{suffix}"
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            params = conninfo_to_dict(server_url)
            params["dbname"] = name
            urls.append(make_conninfo(**params))
    return urls[0], urls[1]


def _drop(server_url: str, *urls: str) -> None:
    from pg_helpers import drop_database  # a non-superuser's FORCE can meet autovacuum

    for url in urls:
        drop_database(server_url, dbname(url))


@pytest.fixture(scope="module")
def baseline(pg_server_url: str) -> Callable[[str], Outcome]:
    """The rounds under default settings, run once per path on a pair of databases of
    their own."""
    done: dict[str, Outcome] = {}

    def get(path: str) -> Outcome:
        if path not in done:
            source_url, warehouse_url = _create_pair(pg_server_url)
            try:
                with pytest.MonkeyPatch.context() as mp:
                    for var in CLIENT_VARIABLES:
                        mp.delenv(var, raising=False)
                    s = Scenario(path, source_url, warehouse_url, source_url, warehouse_url)
                    s.create_source()
                    done[path] = s.run()
            finally:
                _drop(pg_server_url, source_url, warehouse_url)
        return done[path]

    return get


@dataclass(frozen=True)
class Role:
    name: str
    password: str

    def url(self, url: str) -> str:
        """``url`` with this role as its user."""
        params = conninfo_to_dict(url)
        params.update(user=self.name, password=self.password)
        return make_conninfo(**params)


@pytest.fixture
def role(dbs: Any) -> Iterator[Role]:
    """A fresh LOGIN role owning both test databases, with foreign ``ALTER ROLE``
    settings; the databases are dropped before the role."""
    made = Role(f"ef_role_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex)
    ident = sql.Identifier(made.name)

    def drop() -> None:
        _drop(dbs.server_url, dbs.source_url, dbs.warehouse_url)
        with pinned(dbs.server_url) as c:
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))

    try:
        with pinned(dbs.server_url) as c:
            c.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    ident, sql.Literal(made.password)
                )
            )
            # ALTER DATABASE … OWNER TO needs membership in the new owner (and, on
            # PostgreSQL 16+, the right to SET ROLE to it): grant it to ourselves
            c.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(ident))
            for setting, value in ROLE_SETTINGS.items():
                c.execute(
                    sql.SQL("ALTER ROLE {} SET {} = {}").format(
                        ident, sql.Identifier(setting), sql.Literal(value)
                    )
                )
            for url in (dbs.source_url, dbs.warehouse_url):
                c.execute(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(dbname(url)), ident
                    )
                )
    except psycopg.errors.InsufficientPrivilege as exc:
        drop()
        pytest.skip(f"the test server's role cannot create and hand over a role: {exc}")
    try:
        yield made
    finally:
        drop()


def drifting(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Odd rounds: the warehouse database's settings; even rounds: the client's
    ``PGOPTIONS`` (ISO dates, UTC, default styles) override them."""

    def before_round(i: int) -> None:
        if i % 2:
            monkeypatch.delenv("PGOPTIONS", raising=False)
        else:
            monkeypatch.setenv("PGOPTIONS", DEFAULT_OPTIONS)

    return before_round


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("profile", PROFILES)
def test_foreign_session_settings_change_nothing(
    request: pytest.FixtureRequest,
    dbs: Any,
    baseline: Callable[[str], Outcome],
    monkeypatch: pytest.MonkeyPatch,
    profile: str,
    path: str,
) -> None:
    want = baseline(path)
    for var in CLIENT_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    engine_source, engine_warehouse = dbs.source_url, dbs.warehouse_url
    before_round = None
    grant_to = None

    if profile == "client":
        monkeypatch.setenv("PGOPTIONS", CLIENT_OPTIONS)
        monkeypatch.setenv("PGTZ", "Asia/Kolkata")
    elif profile == "database":
        for url in (dbs.source_url, dbs.warehouse_url):
            alter_database(dbs.server_url, dbname(url), DATABASE_SETTINGS)
    elif profile == "role":
        made: Role = request.getfixturevalue("role")
        grant_to = made.name
        engine_source, engine_warehouse = made.url(dbs.source_url), made.url(dbs.warehouse_url)
    else:  # drifting: only the warehouse database is foreign, and the client changes
        alter_database(dbs.server_url, dbname(dbs.warehouse_url), DATABASE_SETTINGS)
        before_round = drifting(monkeypatch)

    s = Scenario(
        path, dbs.source_url, dbs.warehouse_url, engine_source, engine_warehouse, before_round
    )
    s.create_source(grant_to)
    got = s.run()

    found = differences(got, want)
    assert not found, f"{profile} profile, {path}: {len(found)} differences from the " + (
        "default settings:\n" + "\n".join(found)
    )
