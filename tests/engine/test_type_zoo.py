"""Cross-DB columns keep their full types: for every column type the table model has,
and for source types it does not have (``char(n)``, ``bit(n)``, ``bit varying(n)``,
``varchar(n)``, ``numeric(p,s)``, ``timestamp(p)``, ``time(p)``, ``interval day to
second``, ``reg*`` OID aliases, an enum, ``json``, arrays), the cross-DB path (binary COPY
into a stage typed from the source query) gives a target byte-identical to the same-DB
path (the source SQL inlined into the target's statements).

Proved here:

- one column at a time, over that type's edge values (NULL, empty strings, unicode,
  negative zero, NaN and the infinities, the extreme dates and timestamps, intervals
  with months and days, bytea with zero bytes), merge through both paths: the two
  targets have the same column types (``format_type(atttypid, atttypmod)``) and the
  same rows, compared as text and as binary ``COPY`` output read in one session; values
  whose text is known arrive as exactly that text (``char(5)`` without its padding,
  ``bit(4)`` digits, ``reg*`` values as the names the source prints, never as OIDs);
- a hypothesis property over the whole zoo at once: random rows (two snapshots, so
  that keys are inserted, updated, left unchanged and dropped) through merge and scd2
  on both paths give identical targets, identical reported counts, and the same known
  texts.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from ematix_flow import _core, pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import (
    BigInt,
    Boolean,
    Bytea,
    Column,
    Date,
    DoublePrecision,
    Integer,
    Interval,
    Jsonb,
    Numeric,
    Real,
    SmallInt,
    SqlType,
    String,
    Text,
    Time,
    Timestamp,
    TimestampTZ,
    Uuid,
)

pytestmark = pytest.mark.db

PATHS = ("same_db", "cross_db")
TARGET_SCHEMA = "wh"

# Objects the reg* and enum values refer to. They exist in both databases under the same
# names but (being created separately) with different OIDs, so an OID that travels
# instead of a name shows.
SHARED_OBJECTS = (
    "CREATE SCHEMA src",
    'CREATE SCHEMA "Odd Schema"',
    "CREATE TYPE src.mood AS ENUM ('sad', 'ok', 'happy', 'ünïcode')",
    "CREATE TABLE src.anchor (x int)",
    'CREATE TABLE src."Odd Name" (x int)',
    "CREATE FUNCTION src.touch() RETURNS int LANGUAGE sql AS 'SELECT 1'",
)


# --- the zoo --------------------------------------------------------------------------

_ALPHABET = st.characters(exclude_characters="\x00", exclude_categories=["Cs"])


def _texts(max_size: int) -> st.SearchStrategy[str]:
    return st.text(_ALPHABET, max_size=max_size)


def _bits(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text("01", min_size=min_size, max_size=max_size)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _texts(6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts(4), inner, max_size=3),
    max_leaves=6,
).map(json.dumps)

_zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)


def _interval_text(months: int, days: int, micros: int) -> str:
    # The time part as seconds with a fraction: PostgreSQL 14 reads each field of an
    # interval's text into 32 bits, so "2147483648 microseconds" is out of range there
    # (15 and later read it).
    seconds, fraction = divmod(abs(micros), 10**6)
    sign = "-" if micros < 0 else ""
    return f"{months} mons {days} days {sign}{seconds}.{fraction:06d} seconds"


_intervals = st.builds(
    _interval_text,
    st.integers(-1_200_000, 1_200_000),
    st.integers(-100_000, 100_000),
    st.integers(-(10**12), 10**12),
)


def _same(value: Any) -> str:
    return value


def _unpadded(value: str) -> str:
    return value.rstrip(" ")


def _int_array_text(value: list[int | None]) -> str:
    return "{" + ",".join("NULL" if v is None else str(v) for v in value) + "}"


@dataclass(frozen=True)
class Kind:
    """One zoo column: its source type, the target type it is synced into, the values
    drawn for it (passed as parameters and cast to ``source``), the edge values of the
    deterministic cases, and, where a correct sync's result is known as text, how the
    target's value reads for an input value."""

    name: str
    source: str
    target: SqlType
    values: st.SearchStrategy[Any]
    edges: tuple[Any, ...]
    text: Callable[[Any], str] | None = None

    @property
    def strategy(self) -> st.SearchStrategy[Any]:
        return st.none() | st.sampled_from(self.edges) | self.values


REGCLASS = ("pg_class", "pg_type", "src.anchor", 'src."Odd Name"')
REGTYPE = (
    "integer",
    "text",
    "character varying",
    "bit varying",
    "timestamp with time zone",
    "src.mood",
    "src.mood[]",
)
REGNAMESPACE = ("src", "pg_catalog", "public", '"Odd Schema"')
REGPROC = ("now", "src.touch")
MOODS = ("sad", "ok", "happy", "ünïcode")

ZOO: tuple[Kind, ...] = (
    # every type of the table model, from a source column of the same type
    Kind("c_bigint", "bigint", BigInt(), st.integers(-(2**63), 2**63 - 1),
         (0, -1, -(2**63), 2**63 - 1)),
    Kind("c_integer", "integer", Integer(), st.integers(-(2**31), 2**31 - 1),
         (0, -(2**31), 2**31 - 1)),
    Kind("c_smallint", "smallint", SmallInt(), st.integers(-(2**15), 2**15 - 1),
         (0, -(2**15), 2**15 - 1)),
    Kind("c_boolean", "boolean", Boolean(), st.booleans(), (True, False)),
    Kind("c_text", "text", Text(), _texts(12),
         ("", " ", "Zoë", "日本語 ✓", "tab\tnew\nline", "quote'\"\\", "🙂", "NULL"), _same),
    Kind("c_real", "real", Real(), st.floats(width=32),
         (0.1, -0.0, 0.0, math.nan, math.inf, -math.inf, 3.4028234663852886e38,
          1.401298464324817e-45)),
    Kind("c_double", "double precision", DoublePrecision(), st.floats(),
         (0.1, -0.0, 0.0, 1e300, -1e300, math.nan, math.inf, -math.inf, 5e-324,
          1.7976931348623157e308)),
    Kind("c_numeric", "numeric", Numeric(),
         st.decimals(allow_nan=False, allow_infinity=False,
                     min_value=Decimal("-1e30"), max_value=Decimal("1e30")),
         (Decimal("0"), Decimal("-0"), Decimal("-0.01"), Decimal("NaN"), Decimal("Infinity"),
          Decimal("-Infinity"), Decimal("1E+100"), Decimal("0.000000000000000000001"),
          Decimal("-99999999999999999999.99999"))),
    Kind("c_numeric_5_2", "numeric(5,2)", Numeric(5, 2),
         st.decimals(min_value=Decimal("-999.99"), max_value=Decimal("999.99"), places=2),
         (Decimal("-999.99"), Decimal("0.00"), Decimal("999.99"), Decimal("-0.01"),
          Decimal("NaN"))),
    Kind("c_date", "date", Date(), st.dates().map(str),
         ("infinity", "-infinity", "4713-01-01 BC", "5874897-12-31", "2000-02-29",
          "0001-01-01")),
    Kind("c_time", "time", Time(), st.times().map(lambda t: t.isoformat()),
         ("00:00:00", "24:00:00", "23:59:59.999999")),
    Kind("c_timestamp", "timestamp", Timestamp(),
         st.datetimes().map(lambda d: d.isoformat(sep=" ")),
         ("infinity", "-infinity", "4713-01-01 00:00:00 BC", "294276-12-31 23:59:59.999999",
          "2000-02-29 12:00:00.000001")),
    Kind("c_timestamptz", "timestamptz", TimestampTZ(),
         st.datetimes(timezones=_zones).map(lambda d: d.isoformat(sep=" ")),
         ("infinity", "-infinity", "2024-03-31 02:30:00+02", "0001-01-01 00:00:00+14",
          "4713-01-01 00:00:00+00 BC", "294276-12-31 23:59:59.999999+00")),
    Kind("c_interval", "interval", Interval(), _intervals,
         ("0", "1 year 2 mons -3 days 04:05:06.789", "-178000000 years", "1 mon -30 days",
          "-00:00:00.000001", "178000000 years")),
    Kind("c_uuid", "uuid", Uuid(), st.uuids(),
         (uuid.UUID(int=0), uuid.UUID(int=2**128 - 1))),
    Kind("c_jsonb", "jsonb", Jsonb(), _json,
         ("null", "{}", "[]", '""', '{"ü": [1, 2.5, null, true], "a": {"b": "日本"}}',
          "1e300", "-0.0", '"\\u00e9"')),
    Kind("c_bytea", "bytea", Bytea(), st.binary(max_size=16),
         (b"", b"\x00", b"\x00\xff\x00", b"\\x", "ü".encode())),
    Kind("c_string", "character varying", String(), _texts(12), ("", "Zoë", "日本語"), _same),
    Kind("c_string_20", "text", String(20), _texts(20),
         ("", "x" * 20, "ü" * 20, "日本語"), _same),
    # source types the model does not have, each into a model type that holds them
    Kind("c_char5_text", "char(5)", Text(), _texts(5),
         ("", "a", "ab   ", " a", "Zoë", "日本語ab", "abcde"), _unpadded),
    Kind("c_char5_string", "char(5)", String(5), _texts(5),
         ("", "a", "ab   ", "Zoë", "abcde"), _unpadded),
    Kind("c_bit4", "bit(4)", Text(), _bits(4, 4), ("0000", "1010", "1111"), _same),
    Kind("c_varbit8", "bit varying(8)", String(8), _bits(0, 8),
         ("", "1", "10101010"), _same),
    Kind("c_varchar3", "varchar(3)", String(3), _texts(3), ("", "abc", "日本語"), _same),
    Kind("c_varchar3_text", "varchar(3)", Text(), _texts(3), ("", "ü"), _same),
    Kind("c_numeric_5_2_wide", "numeric(5,2)", Numeric(12, 4),
         st.decimals(min_value=Decimal("-999.99"), max_value=Decimal("999.99"), places=2),
         (Decimal("-999.99"), Decimal("0.01"))),
    Kind("c_timestamp3", "timestamp(3)", Timestamp(),
         st.datetimes().map(lambda d: d.isoformat(sep=" ")),
         ("2024-01-01 00:00:00.123456", "1999-12-31 23:59:59.9996", "infinity")),
    Kind("c_timestamptz0", "timestamptz(0)", TimestampTZ(),
         st.datetimes(timezones=_zones).map(lambda d: d.isoformat(sep=" ")),
         ("2024-01-01 00:00:00.5+00", "-infinity")),
    Kind("c_time0", "time(0)", Time(), st.times().map(lambda t: t.isoformat()),
         ("12:34:56.5", "23:59:59.6", "00:00:00")),
    Kind("c_interval_ds", "interval day to second", Interval(), _intervals,
         ("3 days 04:05:06.5", "-1 days +23:59:59", "1 year 2 mons")),
    Kind("c_interval_ym", "interval year to month", Interval(), _intervals,
         ("1 year 2 mons", "-3 mons")),
    Kind("c_json", "json", Jsonb(), _json, ('{"b": 1, "a": [true]}', "[]", '"ü"')),
    Kind("c_regclass", "regclass", Text(), st.sampled_from(REGCLASS), REGCLASS, _same),
    Kind("c_regtype", "regtype", Text(), st.sampled_from(REGTYPE), REGTYPE, _same),
    Kind("c_regnamespace", "regnamespace", String(63), st.sampled_from(REGNAMESPACE),
         REGNAMESPACE, _same),
    Kind("c_regproc", "regproc", Text(), st.sampled_from(REGPROC), REGPROC, _same),
    Kind("c_enum", "src.mood", Text(), st.sampled_from(MOODS), MOODS, _same),
    Kind("c_int_array", "integer[]", Text(),
         st.lists(st.none() | st.integers(-(2**31), 2**31 - 1), max_size=4),
         ([], [None], [1, -2, 2**31 - 1]), _int_array_text),
    Kind("c_text_array", "text[]", Text(), st.lists(st.none() | _texts(4), max_size=3),
         ([], [""], ["a,b", 'q"', None, "{}", "NULL", "ü"])),
)  # fmt: skip

KINDS = {k.name: k for k in ZOO}


# --- databases --------------------------------------------------------------------------


@pytest.fixture
def zoo(dbs: Any) -> Any:
    """The test's databases, each holding the objects the reg*/enum values refer to."""
    for which in ("source", "warehouse"):
        with dbs.connect(which) as conn:
            for statement in SHARED_OBJECTS:
                conn.execute(statement)
    return dbs


def _source_url(dbs: Any, path: str) -> str:
    """same-DB: the source table lives in the warehouse itself; cross-DB: in ``source``."""
    return dbs.warehouse_url if path == "same_db" else dbs.source_url


def _target_class(name: str, kinds: tuple[Kind, ...]) -> type[ManagedTable]:
    attrs: dict[str, Any] = {
        "__schema__": TARGET_SCHEMA,
        "__tablename__": name,
        "id": Column(BigInt(), nullable=False, primary_key=True),
    }
    for k in kinds:
        attrs[k.name] = Column(k.target)
    return type("ZooTarget", (ManagedTable,), attrs)


Row = dict[str, Any]


class Case:
    """One source table (the same name and rows in the database of each path) and the
    targets synced from it."""

    def __init__(self, dbs: Any, kinds: tuple[Kind, ...]) -> None:
        self.dbs = dbs
        self.kinds = kinds
        self.tag = uuid.uuid4().hex[:10]
        self.table = sql.Identifier("src", f"zoo_{self.tag}")
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(k.name), sql.SQL(k.source)) for k in kinds
        )
        for path in PATHS:
            with psycopg.connect(_source_url(dbs, path), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, {})").format(
                        self.table, columns
                    )
                )
        names = sql.SQL(", ").join(sql.Identifier(k.name) for k in kinds)
        self.query = sql.SQL("SELECT id, {} FROM {}").format(names, self.table).as_string(None)

    def load(self, rows: list[Row]) -> None:
        """Replace the source rows, in the source table of both paths."""
        names = sql.SQL(", ").join(sql.Identifier(k.name) for k in self.kinds)
        casts = sql.SQL(", ").join(sql.SQL("%s::" + k.source) for k in self.kinds)
        insert = sql.SQL("INSERT INTO {} (id, {}) VALUES (%s, {})").format(self.table, names, casts)
        params = [(r["id"], *(r[k.name] for k in self.kinds)) for r in rows]
        for path in PATHS:
            with psycopg.connect(_source_url(self.dbs, path)) as conn, conn.cursor() as cur:
                cur.execute(sql.SQL("DELETE FROM {}").format(self.table))
                if params:
                    cur.executemany(insert, params)

    def target(self, mode: str, path: str) -> type[ManagedTable]:
        return _target_class(f"zoo_{self.tag}_{mode}_{path}", self.kinds)

    def sync(self, mode: str, path: str) -> dict[str, Any]:
        result = pipeline.sync(
            target=self.target(mode, path),
            source=Source.postgres_query(_core.connect(_source_url(self.dbs, path)), self.query),
            target_connection=_core.connect(self.dbs.warehouse_url),
            mode=mode,
            force_path=path,
        )
        assert result["status"] == "succeeded" and result["path"] == path, result
        return result


# --- reading the targets back -----------------------------------------------------------

# Framework columns whose values are the time of the run: they differ between two runs
# by nature and are compared only as "set or not".
RUN_TIME = {"valid_from", "valid_to", "_loaded_at", "_updated_at", "_batch_id"}


def _column_types(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = format('%%I.%%I', %s::text, %s::text)::regclass "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (TARGET_SCHEMA, table),
    ).fetchall()


@dataclass
class Snapshot:
    types: list[tuple[str, str]]
    text: list[str]
    binary: bytes


def _snapshot(conn: psycopg.Connection[Any], table: str, mode: str) -> Snapshot:
    """The table's column types, and its rows as text and as binary COPY output."""
    types = _column_types(conn, table)
    items = [
        sql.SQL("{} IS NULL").format(sql.Identifier(n)) if n in RUN_TIME else sql.Identifier(n)
        for n, _ in types
    ]
    order = sql.SQL("id, valid_from" if mode == "scd2" else "id")
    select = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
        sql.SQL(", ").join(items), sql.Identifier(TARGET_SCHEMA, table), order
    )
    text_select = sql.SQL("SELECT ROW({})::text FROM {} ORDER BY {}").format(
        sql.SQL(", ").join(items), sql.Identifier(TARGET_SCHEMA, table), order
    )
    text = [r[0] for r in conn.execute(text_select).fetchall()]
    binary = bytearray()
    with (
        conn.cursor() as cur,
        cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(select)) as copy,
    ):
        for block in copy:
            binary += block
    return Snapshot(types, text, bytes(binary))


def _reader(dbs: Any) -> psycopg.Connection[Any]:
    """One session that reads every target of a case (so both are printed alike)."""
    return psycopg.connect(dbs.warehouse_url, autocommit=True)


def _assert_same_targets(conn: psycopg.Connection[Any], case: Case, mode: str) -> None:
    same = _snapshot(conn, case.target(mode, "same_db").__tablename__, mode)
    cross = _snapshot(conn, case.target(mode, "cross_db").__tablename__, mode)
    declared = [("id", "bigint"), *((k.name, k.target.ddl) for k in case.kinds)]
    assert same.types[: len(declared)] == declared
    assert cross.types == same.types, "column types differ between the paths"
    assert cross.text == same.text, f"{mode}: rows differ between the paths"
    assert cross.binary == same.binary, f"{mode}: binary COPY of the targets differs"


def _assert_known_texts(
    conn: psycopg.Connection[Any], case: Case, mode: str, rows: list[Row]
) -> None:
    """Values whose text a correct sync knows arrive as exactly that text (``reg*`` as
    the names the source prints, not as OIDs; ``char(n)`` without its padding)."""
    known = [k for k in case.kinds if k.text is not None]
    if not known:
        return
    table = case.target(mode, "cross_db").__tablename__
    where = sql.SQL(" WHERE is_current" if mode == "scd2" else "")
    query = sql.SQL("SELECT id, {} FROM {}{} ORDER BY id").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k.name)) for k in known),
        sql.Identifier(TARGET_SCHEMA, table),
        where,
    )
    got = {r[0]: r[1:] for r in conn.execute(query).fetchall()}
    for row in rows:
        expected = tuple(
            None if row[k.name] is None else k.text(row[k.name])  # type: ignore[misc]
            for k in known
        )
        assert got[row["id"]] == expected, f"id={row['id']}: {[k.name for k in known]}"


def _rows_of(values: list[dict[str, Any]]) -> list[Row]:
    return [{"id": i, **v} for i, v in enumerate(values, start=1)]


# --- one type at a time ------------------------------------------------------------------


def _edge_rows(kind: Kind) -> list[Row]:
    return _rows_of([{kind.name: v} for v in (*kind.edges, None)])


@pytest.mark.parametrize("name", list(KINDS))
def test_each_type_arrives_the_same_through_both_paths(zoo: Any, name: str) -> None:
    kind = KINDS[name]
    case = Case(zoo, (kind,))
    rows = _edge_rows(kind)
    case.load(rows)
    counts = {path: case.sync("merge", path)["rows_inserted"] for path in PATHS}
    assert counts == {"same_db": len(rows), "cross_db": len(rows)}
    with _reader(zoo) as conn:
        _assert_same_targets(conn, case, "merge")
        _assert_known_texts(conn, case, "merge", rows)


# --- the whole zoo at once ----------------------------------------------------------------

_zoo_row = st.fixed_dictionaries({k.name: k.strategy for k in ZOO})
snapshots = st.lists(_zoo_row, max_size=5).map(_rows_of)


def _edge_snapshots() -> tuple[list[Row], list[Row]]:
    """Every edge value of every kind in one snapshot, then a second one that changes
    some keys, keeps some, drops some and adds one."""
    width = max(len(k.edges) for k in ZOO) + 1
    first = _rows_of(
        [{k.name: (*k.edges, None)[i % (len(k.edges) + 1)] for k in ZOO} for i in range(width)]
    )
    second = [dict(r) for r in first[1:]]
    for r in second[::2]:
        for k in ZOO:
            r[k.name] = (*k.edges, None)[(r["id"] + 1) % (len(k.edges) + 1)]
    second.append({"id": width + 1, **{k.name: k.edges[0] for k in ZOO}})
    return first, second


_FIRST, _SECOND = _edge_snapshots()

ZOO_SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@ZOO_SETTINGS
@example(first=_FIRST, second=_SECOND)
@given(first=snapshots, second=snapshots)
def test_whole_zoo_property_merge_and_scd2(zoo: Any, first: list[Row], second: list[Row]) -> None:
    case = Case(zoo, ZOO)
    results: dict[tuple[str, str], list[tuple[int, ...]]] = {}
    for rows in (first, second):
        case.load(rows)
        for mode in ("merge", "scd2"):
            for path in PATHS:
                r = case.sync(mode, path)
                results.setdefault((mode, path), []).append(
                    (r["rows_inserted"], r["rows_updated"], r["rows_deleted"])
                )
    with _reader(zoo) as conn:
        for mode in ("merge", "scd2"):
            assert results[(mode, "cross_db")] == results[(mode, "same_db")], f"{mode} counts"
            _assert_same_targets(conn, case, mode)
        merged = {r["id"]: r for r in first} | {r["id"]: r for r in second}
        _assert_known_texts(conn, case, "merge", list(merged.values()))
