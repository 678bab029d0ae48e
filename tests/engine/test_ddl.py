"""Target DDL: created with framework columns, additive drift applied in the run's
transaction, destructive drift refused with the report; source-only types cross by text."""

from __future__ import annotations

from typing import Any

import pytest

from ematix_flow import pipeline
from ematix_flow._errors import DriftError
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text

pytestmark = pytest.mark.db


class Cust(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "cust"
    id = Column(BigInt(), nullable=False, primary_key=True)
    name = Column(Text())
    note = Column(Text())


def sync(env: Any, mode: str = "scd1") -> dict:
    return pipeline.sync(
        target=Cust,
        source=Source.postgres_query(env.source, "SELECT id, name, note FROM s"),
        target_connection=env.warehouse,
        mode=mode,
    )


def test_additive_drift_is_applied_with_the_data(env: Any) -> None:
    env.src(
        "CREATE TABLE s (id bigint, name text, note text)", "INSERT INTO s VALUES (1, 'a', 'n')"
    )
    env.wh(
        "CREATE SCHEMA wh",
        "CREATE TABLE wh.cust (id bigint PRIMARY KEY, name text, row_hash text NOT NULL, "
        "_updated_at timestamptz NOT NULL)",
        "INSERT INTO wh.cust VALUES (1, 'old', 'h', now())",
    )
    result = sync(env)
    assert result["rows_updated"] == 1
    assert env.rows("SELECT id, name, note FROM wh.cust") == [(1, "a", "n")]
    history = env.rows("SELECT status FROM ematix_flow.run_history")
    assert history == [("succeeded",)]


def test_destructive_drift_is_refused_and_nothing_changes(env: Any) -> None:
    env.src(
        "CREATE TABLE s (id bigint, name text, note text)", "INSERT INTO s VALUES (1, 'a', 'n')"
    )
    env.wh(
        "CREATE SCHEMA wh",
        "CREATE TABLE wh.cust (id bigint PRIMARY KEY, name integer, note text)",
    )
    with pytest.raises(DriftError) as err:
        sync(env, "merge")
    text = str(err.value)
    assert "Pipeline (ad hoc), target wh.cust" in text and "name" in text
    assert env.rows("SELECT count(*) FROM wh.cust") == [(0,)]


def test_created_table_carries_framework_columns_and_current_index(env: Any) -> None:
    env.src(
        "CREATE TABLE s (id bigint, name text, note text)", "INSERT INTO s VALUES (1, 'a', 'n')"
    )
    sync(env, "scd2")
    cols = env.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'wh' "
        "AND table_name = 'cust' ORDER BY ordinal_position"
    )
    assert [c[0] for c in cols] == [
        "id", "name", "note", "valid_from", "valid_to", "is_current", "row_hash",
    ]  # fmt: skip
    idx = env.rows("SELECT indexdef FROM pg_indexes WHERE indexname = 'cust_current_key'")
    assert idx and "WHERE is_current" in idx[0][0]
    pk = env.rows("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'cust_pkey'")
    assert pk == [("PRIMARY KEY (id, valid_from)",)]


def test_a_source_only_type_crosses_as_text(env: Any) -> None:
    env.src(
        "CREATE TYPE mood AS ENUM ('happy', 'sad')",
        "CREATE TABLE s (id bigint, name mood, note text)",
        "INSERT INTO s VALUES (1, 'happy', NULL), (2, 'sad', 'x')",
    )
    assert sync(env, "merge")["rows_inserted"] == 2
    assert env.rows("SELECT id, name, note FROM wh.cust ORDER BY id") == [
        (1, "happy", None),
        (2, "sad", "x"),
    ]
