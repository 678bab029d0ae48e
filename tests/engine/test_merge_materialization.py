"""The same-DB merge reads its source once, inlined into the upsert: counting the
source rows (for ``rows_unchanged``) must not make PostgreSQL materialize the ``src``
CTE (a tuplestore of every source row, spilling to disk past ``work_mem``)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from ematix_flow._engine import TargetOptions, plan
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text

pytestmark = pytest.mark.db


class Item(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "item"
    id = Column(BigInt(), nullable=False, primary_key=True)
    v = Column(Text())


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in node.get("Plans", []):
        out += nodes(child)
    return out


def rolled_back(env: Any, steps: Any, statement: str) -> tuple[Any, ...] | None:
    """The first row of ``statement``, run in the warehouse after the plan's DDL steps
    with the run's settings in place, all in one transaction that is rolled back."""
    with psycopg.connect(env.dbs.warehouse_url) as c:
        for s in steps:
            if s.kind == "ddl":
                c.execute(s.sql)
        c.execute("SELECT set_config('ematix_flow.batch_id', gen_random_uuid()::text, true)")
        c.execute("SELECT set_config('ematix_flow.watermark', '0', true)")
        row = c.execute(statement).fetchone()
        c.rollback()
    return row


def items(env: Any) -> Source:
    """1,000 rows in the warehouse, read as a same-DB source."""
    env.wh(
        "CREATE TABLE items (id bigint PRIMARY KEY, v text)",
        "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 1000) g",
        "CREATE SCHEMA wh",
        "ANALYZE items",
    )
    return Source.postgres_query(env.warehouse, "SELECT id, v FROM items")


@pytest.mark.parametrize(
    ("mode", "incremental"), [("merge", None), ("scd1", None), ("merge", "id"), ("append", None)]
)
def test_same_db_statement_does_not_materialize_the_source(
    env: Any, mode: str, incremental: str | None
) -> None:
    source = items(env)
    opts = TargetOptions(table=Item.__table_spec__, mode=mode, incremental_column=incremental)
    fresh = plan(opts, source, env.warehouse, pipeline="p")
    # the table exists (with the keys a direct load builds after it): staged
    env.wh(*(s.sql for s in (*fresh.steps, *fresh.fallback_steps) if s.kind == "ddl"))
    p = plan(opts, source, env.warehouse, pipeline="p")
    data = [s for s in p.steps if s.kind == "data"]
    assert len(data) == 1
    (doc,) = rolled_back(env, p.steps, "EXPLAIN (FORMAT JSON) " + data[0].sql)
    found = nodes((doc if isinstance(doc, list) else json.loads(doc))[0]["Plan"])
    scans = [n for n in found if n["Node Type"] == "CTE Scan" and n.get("CTE Name") == "src"]
    assert scans == [], "src is materialized and read back (CTE Scan)"
    # The counts still come from the statement: one row of named counts.
    row = rolled_back(env, p.steps, data[0].sql)
    assert row is not None and 1000 in row


@pytest.mark.parametrize("mode", ["merge", "scd1", "scd2", "append"])
def test_load_into_a_new_table_is_one_insert_that_does_not_materialize(env: Any, mode: str) -> None:
    source = items(env)
    p = plan(
        TargetOptions(table=Item.__table_spec__, mode=mode), source, env.warehouse, pipeline="p"
    )
    load, *after = [s for s in p.steps if s.kind == "load"]
    assert all(s.sql.startswith(("ALTER TABLE", "CREATE UNIQUE INDEX")) for s in after)
    assert not [s for s in p.steps if s.kind in ("data", "check", "stage", "copy")]
    assert p.decision("load").value == "direct"
    assert "ON CONFLICT" not in load.sql and "INSERT INTO" in load.sql
    (doc,) = rolled_back(env, p.steps, "EXPLAIN (FORMAT JSON) " + load.sql)
    found = nodes((doc if isinstance(doc, list) else json.loads(doc))[0]["Plan"])
    assert not [n for n in found if n["Node Type"] == "CTE Scan"], "src is materialized"
