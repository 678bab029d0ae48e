"""Drift on a real PostgreSQL: each kind of difference made for real, and the safe fixes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from _schema_testing import create, drift

from ematix_flow._schema import (
    ColumnExtra,
    ColumnMissing,
    NullabilityMismatch,
    PrimaryKeyMismatch,
    TypeMismatch,
    UniqueConstraintExtra,
    UniqueConstraintMissing,
    additive_sql,
    compare_table,
    destructive,
    unique_constraint_name,
)
from ematix_flow._tablespec import ColumnSpec, TableSpec
from ematix_flow.types import BigInt, Integer, Numeric, String, Text, TimestampTZ

pytestmark = pytest.mark.db

SPEC = TableSpec(
    "warehouse",
    "customer",
    (
        ColumnSpec("id", BigInt(), nullable=False),
        ColumnSpec("tenant", Integer(), nullable=False),
        ColumnSpec("email", String(256), nullable=False),
        ColumnSpec("name", Text()),
        ColumnSpec("balance", Numeric(12, 2)),
        ColumnSpec("seen", TimestampTZ()),
    ),
    primary_key=("id",),
    unique_constraints=(("email",), ("tenant", "name"), ("tenant", "seen", "balance")),
)
T = "warehouse.customer"


@pytest.fixture
def wh(dbs: Any) -> Iterator[psycopg.Connection[Any]]:
    with dbs.connect("warehouse") as conn:
        create(conn, SPEC)
        conn.execute(
            f"INSERT INTO {T} (id, tenant, email, name) "
            "VALUES (1, 7, 'a@x', 'A'), (2, 7, 'b@x', 'B')"
        )
        yield conn


def _fix(conn: psycopg.Connection[Any], spec: TableSpec = SPEC) -> None:
    for statement in additive_sql(spec, drift(conn, spec)):
        conn.execute(statement)


def _uc(cols: tuple[str, ...]) -> str:
    return unique_constraint_name(SPEC, cols)


def test_a_fresh_table_has_no_drift(wh: psycopg.Connection[Any]) -> None:
    assert drift(wh, SPEC) == []
    assert additive_sql(SPEC, []) == []


def test_missing_nullable_column_is_added_keeping_rows(wh: psycopg.Connection[Any]) -> None:
    wh.execute(f"ALTER TABLE {T} DROP COLUMN name")  # also drops UNIQUE (tenant, name)
    diffs = drift(wh, SPEC)
    assert diffs == [
        ColumnMissing("warehouse", "customer", column="name", type=Text(), nullable=True),
        UniqueConstraintMissing("warehouse", "customer", columns=("tenant", "name")),
    ]
    assert all(d.additive for d in diffs) and destructive(diffs) == []
    assert "column name (text NULL) is declared but missing" in diffs[0].describe()
    assert "warehouse.customer" in diffs[0].describe()

    _fix(wh)
    assert drift(wh, SPEC) == []
    assert wh.execute(f"SELECT id, name FROM {T} ORDER BY id").fetchall() == [
        (1, None),
        (2, None),
    ]


def test_missing_not_null_column_is_only_reported(wh: psycopg.Connection[Any]) -> None:
    wh.execute(f"ALTER TABLE {T} DROP COLUMN email")
    diffs = drift(wh, SPEC)
    assert diffs == [
        ColumnMissing("warehouse", "customer", column="email", type=String(256), nullable=False),
        UniqueConstraintMissing("warehouse", "customer", columns=("email",), blocked_by=("email",)),
    ]
    assert destructive(diffs) == diffs
    assert additive_sql(SPEC, diffs) == []
    text = diffs[0].describe()
    assert "column email" in text and "warehouse.customer" in text
    assert "NOT NULL, so it cannot be added automatically" in text
    assert "cannot be added before column(s) (email) exist" in diffs[1].describe()


def test_extra_column_is_reported_not_dropped(wh: psycopg.Connection[Any]) -> None:
    wh.execute(f"ALTER TABLE {T} ADD COLUMN legacy_code char(3) NOT NULL DEFAULT 'abc'")
    diffs = drift(wh, SPEC)
    assert [type(d) for d in diffs] == [ColumnExtra]
    extra = diffs[0]
    assert isinstance(extra, ColumnExtra) and extra.column == "legacy_code"
    assert extra.nullable is False and not extra.additive
    assert "character(3)" in extra.describe() and "legacy_code" in extra.describe()
    assert additive_sql(SPEC, diffs) == []
    # NOT NULL with a default: an insert that leaves it out still succeeds
    assert extra.has_default and extra.tolerated and destructive(diffs) == []
    assert "left alone (new rows get its default in it)" in extra.describe()


def test_extra_column_that_would_break_inserts_is_destructive(wh: psycopg.Connection[Any]) -> None:
    wh.execute(
        f"ALTER TABLE {T} ADD COLUMN note text, ADD COLUMN serial_no bigint NOT NULL "
        "GENERATED ALWAYS AS IDENTITY, ADD COLUMN strict text NOT NULL DEFAULT 'x'"
    )
    wh.execute(f"ALTER TABLE {T} ALTER COLUMN strict DROP DEFAULT")
    diffs = drift(wh, SPEC)
    assert [(d.column, d.tolerated) for d in diffs if isinstance(d, ColumnExtra)] == [
        ("note", True),
        ("serial_no", True),
        ("strict", False),
    ]
    assert [d.column for d in destructive(diffs) if isinstance(d, ColumnExtra)] == ["strict"]
    text = destructive(diffs)[0].describe()
    assert "column strict (text NOT NULL, no default)" in text
    assert "every insert would fail" in text and "DROP COLUMN strict" in text


def test_type_mismatch(wh: psycopg.Connection[Any]) -> None:
    wh.execute(f"ALTER TABLE {T} ALTER COLUMN balance TYPE numeric(14,4)")
    wh.execute(f"ALTER TABLE {T} ALTER COLUMN tenant TYPE bigint")
    diffs = drift(wh, SPEC)
    assert diffs == [
        TypeMismatch("warehouse", "customer", column="tenant", expected=Integer(), actual=BigInt()),
        TypeMismatch(
            "warehouse",
            "customer",
            column="balance",
            expected=Numeric(12, 2),
            actual=Numeric(14, 4),
        ),
    ]
    assert destructive(diffs) == diffs
    assert "declared numeric(12,2) but the table has numeric(14,4)" in diffs[1].describe()


@pytest.mark.parametrize(
    ("alter", "column", "expected_nullable"),
    [
        ("ALTER COLUMN name SET NOT NULL", "name", True),
        ("ALTER COLUMN email DROP NOT NULL", "email", False),
    ],
)
def test_nullability_mismatch_both_ways(
    wh: psycopg.Connection[Any], alter: str, column: str, expected_nullable: bool
) -> None:
    wh.execute(f"ALTER TABLE {T} {alter}")
    diffs = drift(wh, SPEC)
    assert diffs == [
        NullabilityMismatch(
            "warehouse",
            "customer",
            column=column,
            expected_nullable=expected_nullable,
            actual_nullable=not expected_nullable,
        )
    ]
    assert destructive(diffs) == diffs and additive_sql(SPEC, diffs) == []
    assert f"column {column} is declared" in diffs[0].describe()


def test_primary_key_mismatch(wh: psycopg.Connection[Any]) -> None:
    wh.execute(f"ALTER TABLE {T} DROP CONSTRAINT customer_pkey")
    assert drift(wh, SPEC) == [
        PrimaryKeyMismatch("warehouse", "customer", expected=("id",), actual=())
    ]
    wh.execute(f"ALTER TABLE {T} ADD PRIMARY KEY (tenant, id)")
    diffs = drift(wh, SPEC)
    assert diffs == [
        PrimaryKeyMismatch("warehouse", "customer", expected=("id",), actual=("tenant", "id"))
    ]
    assert not diffs[0].additive and additive_sql(SPEC, diffs) == []
    assert "declares primary key (id) but the table has primary key (tenant, id)" in (
        diffs[0].describe()
    )
    # A spec without a primary key against a table with one.
    keyless = TableSpec("warehouse", "customer", SPEC.columns)
    assert drift(wh, keyless)[0] == PrimaryKeyMismatch(
        "warehouse", "customer", expected=(), actual=("tenant", "id")
    )


def test_several_missing_unique_constraints_are_added(wh: psycopg.Connection[Any]) -> None:
    wh.execute(f"ALTER TABLE {T} DROP CONSTRAINT {_uc(('tenant', 'seen', 'balance'))}")
    wh.execute(f"ALTER TABLE {T} DROP CONSTRAINT {_uc(('email',))}")
    diffs = drift(wh, SPEC)
    assert diffs == [  # in declaration order, whatever order they were dropped in
        UniqueConstraintMissing("warehouse", "customer", columns=("email",)),
        UniqueConstraintMissing("warehouse", "customer", columns=("tenant", "seen", "balance")),
    ]
    assert "unique constraint on (tenant, seen, balance) is missing" in diffs[1].describe()
    statements = [s.as_string(wh) for s in additive_sql(SPEC, diffs)]
    assert statements == [
        'ALTER TABLE "warehouse"."customer" ADD CONSTRAINT "customer_email_key" UNIQUE ("email")',
        'ALTER TABLE "warehouse"."customer" ADD CONSTRAINT "customer_tenant_seen_balance_key" '
        'UNIQUE ("tenant", "seen", "balance")',
    ]
    _fix(wh)
    assert drift(wh, SPEC) == []
    with pytest.raises(psycopg.errors.UniqueViolation):
        wh.execute(f"INSERT INTO {T} (id, tenant, email) VALUES (3, 8, 'a@x')")


def test_adding_a_unique_constraint_over_duplicates_fails_loudly(
    wh: psycopg.Connection[Any],
) -> None:
    wh.execute(f"ALTER TABLE {T} DROP CONSTRAINT {_uc(('tenant', 'name'))}")
    wh.execute(f"INSERT INTO {T} (id, tenant, email, name) VALUES (3, 7, 'c@x', 'A')")
    diffs = drift(wh, SPEC)
    assert diffs == [UniqueConstraintMissing("warehouse", "customer", columns=("tenant", "name"))]
    assert "fails if existing rows hold duplicates" in diffs[0].describe()
    with pytest.raises(psycopg.errors.UniqueViolation):
        _fix(wh)


def test_extra_unique_constraints_compare_as_ordered_columns(wh: psycopg.Connection[Any]) -> None:
    # Same columns as the declared (tenant, name) but in another key order: a different
    # constraint (another index order), so it is extra, not a match.
    wh.execute(f"ALTER TABLE {T} ADD CONSTRAINT other_order UNIQUE (name, tenant)")
    wh.execute(f"ALTER TABLE {T} ADD UNIQUE (seen)")
    diffs = drift(wh, SPEC)
    assert diffs == [  # the table's order: by constraint name
        UniqueConstraintExtra("warehouse", "customer", columns=("seen",)),  # customer_seen_key
        UniqueConstraintExtra("warehouse", "customer", columns=("name", "tenant")),
    ]
    assert destructive(diffs) == diffs and additive_sql(SPEC, diffs) == []
    assert "unique constraint on (name, tenant) exists but is not declared" in diffs[1].describe()


def test_swapped_composite_constraint_is_one_missing_and_one_extra(
    wh: psycopg.Connection[Any],
) -> None:
    wh.execute(f"ALTER TABLE {T} DROP CONSTRAINT {_uc(('tenant', 'name'))}")
    wh.execute(f"ALTER TABLE {T} ADD UNIQUE (name, tenant)")
    diffs = drift(wh, SPEC)
    assert diffs == [
        UniqueConstraintMissing("warehouse", "customer", columns=("tenant", "name")),
        UniqueConstraintExtra("warehouse", "customer", columns=("name", "tenant")),
    ]
    _fix(wh)
    remaining = drift(wh, SPEC)
    assert remaining == [diffs[1]]


def test_many_kinds_at_once_come_in_a_fixed_order(wh: psycopg.Connection[Any]) -> None:
    wh.execute(
        f"ALTER TABLE {T} DROP CONSTRAINT customer_pkey, DROP COLUMN seen, "
        "ALTER COLUMN email TYPE text, ALTER COLUMN email DROP NOT NULL, "
        "ADD COLUMN zz int, ADD COLUMN aa int UNIQUE"
    )
    diffs = drift(wh, SPEC)
    assert [
        (type(d).__name__, getattr(d, "column", getattr(d, "columns", None))) for d in diffs
    ] == [
        ("TypeMismatch", "email"),
        ("NullabilityMismatch", "email"),
        ("ColumnMissing", "seen"),
        ("ColumnExtra", "zz"),
        ("ColumnExtra", "aa"),
        ("PrimaryKeyMismatch", None),
        ("UniqueConstraintMissing", ("tenant", "seen", "balance")),
        ("UniqueConstraintExtra", ("aa",)),
    ]
    assert [d.additive for d in diffs] == [False, False, True, False, False, False, True, False]
    assert diffs == drift(wh, SPEC)  # deterministic
    _fix(wh)
    assert drift(wh, SPEC) == [d for d in diffs if not d.additive]  # the rest stay
    # the nullable extra columns are left alone: not among what stops a run
    assert [d for d in destructive(diffs) if isinstance(d, ColumnExtra)] == []


def test_every_difference_is_frozen_and_names_its_table(wh: psycopg.Connection[Any]) -> None:
    wh.execute(f"ALTER TABLE {T} DROP CONSTRAINT customer_pkey, DROP COLUMN seen, ADD COLUMN x int")
    for diff in drift(wh, SPEC):
        assert "warehouse.customer" in diff.describe()
        with pytest.raises(AttributeError):
            diff.table = "other"  # type: ignore[misc]


def test_additive_sql_refuses_differences_of_another_table() -> None:
    other = TableSpec("warehouse", "other", SPEC.columns)
    diff = ColumnMissing("warehouse", "customer", column="name", type=Text(), nullable=True)
    with pytest.raises(ValueError, match=r"warehouse\.customer"):
        additive_sql(other, [diff])
    assert compare_table(SPEC, SPEC) == []
