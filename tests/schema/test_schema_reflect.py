"""Reflection on a real PostgreSQL: every type round-trips, keys come back in key order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from _schema_testing import create, drift, reflect

from ematix_flow._errors import DriftError
from ematix_flow._schema import (
    TypeMismatch,
    UnknownType,
    additive_sql,
    compare_table,
    primary_key_name,
    reflect_table,
    unique_constraint_name,
)
from ematix_flow._tablespec import ColumnSpec, TableSpec
from ematix_flow.types import (
    BigInt,
    Boolean,
    Bytea,
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
    sql_type,
)

pytestmark = pytest.mark.db

#: Every type of ematix_flow.types, in each form it can take.
EVERY_TYPE: list[SqlType] = [
    sql_type(BigInt),
    Integer(),
    SmallInt(),
    Boolean(),
    Text(),
    String(),
    String(1),
    sql_type(String[256]),
    Numeric(),
    Numeric(10),
    sql_type(Numeric[12, 2]),
    Numeric(1000, 1000),
    Real(),
    DoublePrecision(),
    Date(),
    Time(),
    Timestamp(),
    TimestampTZ(),
    Interval(),
    Uuid(),
    Jsonb(),
    Bytea(),
]


@pytest.fixture
def wh(dbs: Any) -> Iterator[psycopg.Connection[Any]]:
    with dbs.connect("warehouse") as conn:
        yield conn


def test_every_type_round_trips_with_nullability_and_identity(
    wh: psycopg.Connection[Any],
) -> None:
    columns = [ColumnSpec("id", BigInt(), nullable=False, identity=True)]
    for i, t in enumerate(EVERY_TYPE):
        columns.append(ColumnSpec(f"c{i}_null", t, nullable=True))
        columns.append(ColumnSpec(f"c{i}_notnull", t, nullable=False))
    columns.append(ColumnSpec("small_id", SmallInt(), nullable=False, identity=True))
    spec = TableSpec("warehouse", "all_types", tuple(columns), primary_key=("id",))
    create(wh, spec)

    reflected = reflect(wh, spec)
    assert reflected.columns == spec.columns  # type, nullability, identity, order
    assert reflected.primary_key == ("id",)
    assert compare_table(spec, reflected) == []


@pytest.mark.parametrize("declared", EVERY_TYPE, ids=lambda t: t.ddl)
def test_each_type_differs_from_every_other(wh: psycopg.Connection[Any], declared: SqlType) -> None:
    # A table holding one column of each type; declaring it with `declared` must report
    # a mismatch on every column except those of that very type.
    columns = tuple(ColumnSpec(f"c{i}", t) for i, t in enumerate(EVERY_TYPE))
    create(wh, TableSpec("s", "t", columns))
    spec = TableSpec("s", "t", tuple(ColumnSpec(c.name, declared) for c in columns))
    got = {d.column: d for d in drift(wh, spec) if isinstance(d, TypeMismatch)}
    for c in columns:
        if c.type == declared:
            assert c.name not in got
        else:
            assert got[c.name].actual == c.type and got[c.name].expected == declared


def test_keys_reflect_in_key_order_not_column_order(wh: psycopg.Connection[Any]) -> None:
    spec = TableSpec(
        "s",
        "keys",
        tuple(ColumnSpec(n, Integer(), nullable=False) for n in ("a", "b", "c", "d")),
        primary_key=("c", "a"),
        unique_constraints=(("d",), ("b", "a"), ("a", "b"), ("d", "c", "b")),
    )
    create(wh, spec)
    reflected = reflect(wh, spec)
    assert reflected.primary_key == ("c", "a")
    assert sorted(reflected.unique_constraints) == sorted(spec.unique_constraints)
    assert compare_table(spec, reflected) == []

    names = dict(
        wh.execute(
            "SELECT conname, contype::text FROM pg_constraint WHERE conrelid = 's.keys'::regclass"
        ).fetchall()
    )
    assert names[primary_key_name(spec)] == "p"
    for uc in spec.unique_constraints:
        assert names[unique_constraint_name(spec, uc)] == "u"


def test_table_created_by_hand_with_default_names_matches_its_spec(
    wh: psycopg.Connection[Any],
) -> None:
    wh.execute("CREATE SCHEMA s")
    wh.execute(
        "CREATE TABLE s.hand (id int8 PRIMARY KEY, code varchar(8) NOT NULL, "
        "region text, amount decimal(9,3), UNIQUE (code), UNIQUE (region, code))"
    )
    spec = TableSpec(
        "s",
        "hand",
        (
            ColumnSpec("id", BigInt(), nullable=False),
            ColumnSpec("code", String(8), nullable=False),
            ColumnSpec("region", Text()),
            ColumnSpec("amount", Numeric(9, 3)),
        ),
        primary_key=("id",),
        unique_constraints=(("region", "code"), ("code",)),
    )
    assert drift(wh, spec) == []


def test_a_constraint_declared_twice_in_the_table_reflects_once(
    wh: psycopg.Connection[Any],
) -> None:
    wh.execute(
        "CREATE TABLE public.twice (a int, CONSTRAINT u1 UNIQUE (a), CONSTRAINT u2 UNIQUE (a))"
    )
    reflected = reflect_table(wh, "public", "twice")
    assert reflected is not None
    assert reflected.unique_constraints == (("a",),)


def test_missing_table_and_missing_schema_reflect_as_none(wh: psycopg.Connection[Any]) -> None:
    assert reflect_table(wh, "public", "nope") is None
    assert reflect_table(wh, "no_such_schema", "nope") is None
    wh.execute("CREATE TABLE public.other (a int)")
    assert reflect_table(wh, "public", "Other") is None  # names are exact, not folded


def test_a_view_under_the_name_is_an_error_naming_it(wh: psycopg.Connection[Any]) -> None:
    wh.execute("CREATE VIEW public.v AS SELECT 1 AS a")
    with pytest.raises(DriftError, match=r"public\.v is a view, not a table"):
        reflect_table(wh, "public", "v")


def test_unknown_types_reflect_with_their_postgres_text(wh: psycopg.Connection[Any]) -> None:
    wh.execute(
        "CREATE TABLE public.odd (tags text[], at timestamp(3), p point, ok bigint, v varchar(5)[])"
    )
    reflected = reflect_table(wh, "public", "odd")
    assert reflected is not None
    types = {c.name: c.type for c in reflected.columns}
    assert types["tags"] == UnknownType("text[]")
    assert types["at"] == UnknownType("timestamp(3) without time zone")
    assert types["p"] == UnknownType("point")
    assert types["v"] == UnknownType("character varying(5)[]")
    assert types["ok"] == BigInt()

    spec = TableSpec(
        "public",
        "odd",
        (
            ColumnSpec("tags", Text()),
            ColumnSpec("at", Timestamp()),
            ColumnSpec("p", Text()),
            ColumnSpec("ok", BigInt()),
            ColumnSpec("v", String(5)),
        ),
    )
    diffs = compare_table(spec, reflected)
    assert [(type(d), d.column) for d in diffs] == [  # type: ignore[attr-defined]
        (TypeMismatch, "tags"),
        (TypeMismatch, "at"),
        (TypeMismatch, "p"),
        (TypeMismatch, "v"),
    ]
    assert "text[] (a type ematix-flow does not model)" in diffs[0].describe()
    assert "timestamp(3) without time zone" in diffs[1].describe()


def test_a_table_with_no_columns_reflects_and_is_repaired(wh: psycopg.Connection[Any]) -> None:
    wh.execute("CREATE TABLE public.bare ()")
    reflected = reflect_table(wh, "public", "bare")
    assert reflected is not None and reflected.columns == ()
    spec = TableSpec("public", "bare", (ColumnSpec("a", Text()), ColumnSpec("b", Jsonb())))
    diffs = compare_table(spec, reflected)
    for statement in additive_sql(spec, diffs):
        wh.execute(statement)
    assert drift(wh, spec) == []


QUOTED = TableSpec(
    'my "odd" schema',
    "select",
    (
        ColumnSpec("from", BigInt(), nullable=False, identity=True),
        ColumnSpec("Mixed Case", Text(), nullable=False),
        ColumnSpec("ünïcödé ✓", String(20)),
        ColumnSpec('say "hi"', Numeric(5, 1)),
        ColumnSpec("order", Date()),
        ColumnSpec("é" * 31, Integer()),
    ),
    primary_key=("from",),
    unique_constraints=(
        ("Mixed Case",),
        ("ünïcödé ✓", 'say "hi"'),
        ("order", "é" * 31),
    ),
)


def test_identifiers_needing_quotes_work_end_to_end(wh: psycopg.Connection[Any]) -> None:
    create(wh, QUOTED)
    assert drift(wh, QUOTED) == []

    table = 'ALTER TABLE "my ""odd"" schema"."select" '
    wh.execute(
        'INSERT INTO "my ""odd"" schema"."select" ("Mixed Case", "order") '
        "VALUES ('x', '2024-01-01')"
    )
    wh.execute(table + 'DROP COLUMN "say ""hi"""')  # drops its constraint with it
    wh.execute(table + f'DROP CONSTRAINT "{unique_constraint_name(QUOTED, ("Mixed Case",))}"')
    wh.execute(table + f'DROP CONSTRAINT "{unique_constraint_name(QUOTED, ("order", "é" * 31))}"')
    diffs = drift(wh, QUOTED)
    assert len(diffs) == 4 and all(d.additive for d in diffs)
    assert 'column "say ""hi"""' in diffs[0].describe()
    assert '"my ""odd"" schema".select' in diffs[0].describe()

    for statement in additive_sql(QUOTED, diffs):
        wh.execute(statement)
    assert drift(wh, QUOTED) == []
    assert wh.execute('SELECT count(*) FROM "my ""odd"" schema"."select"').fetchone() == (1,)


def test_reflection_ignores_the_connections_row_factory(dbs: Any) -> None:
    from psycopg.rows import dict_row

    spec = TableSpec("s", "t", (ColumnSpec("a", BigInt(), nullable=False),), primary_key=("a",))
    with dbs.connect("warehouse", row_factory=dict_row) as conn:
        create(conn, spec)
        assert reflect(conn, spec) == spec


def test_a_partitioned_table_reflects_like_a_table(wh: psycopg.Connection[Any]) -> None:
    wh.execute(
        "CREATE TABLE public.events (id bigint NOT NULL, day date NOT NULL, note text, "
        "PRIMARY KEY (day, id), UNIQUE (id, day)) PARTITION BY RANGE (day)"
    )
    reflected = reflect_table(wh, "public", "events")
    assert reflected is not None
    assert reflected.column_names == ("id", "day", "note")
    assert reflected.primary_key == ("day", "id")
    assert reflected.unique_constraints == (("id", "day"),)
