"""A target created by the run is loaded straight in — binary COPY into the table
(cross-DB) or one ``INSERT … SELECT`` (same-DB), no stage, no upsert — and the result is
the staged load's, byte for byte; duplicate keys and NULL watermarks still fail before
anything commits, with the staged path's messages."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from ematix_flow._engine import TargetOptions, execute, plan
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Bytea, Column, Jsonb, Numeric, String, Text, TimestampTZ

pytestmark = pytest.mark.db

MODES = ["merge", "scd1", "scd2", "append"]
PATHS = ["same_db", "cross_db"]

ROWS = """
SELECT * FROM (VALUES
  (1::bigint, 'plain'::text, 12.5::numeric, '2026-01-02 03:04:05.678901+02'::timestamptz,
   '{"a": [1, 2.50, null]}'::jsonb, '\\x00ff10'::bytea, 'short'::varchar),
  (2, 'ünïcødé €', -0.004, '1999-12-31 23:59:59+00', '"x"', '\\x'::bytea, NULL),
  (3, '', NULL, NULL, NULL, NULL, 'ten chars!'),
  (4, NULL, 123456.789, 'infinity', '{}', '\\x01', '')
) AS v(id, name, amount, at, payload, raw, note)
"""


def table(name: str) -> type[ManagedTable]:
    attrs: dict[str, Any] = {
        "__schema__": "wh",
        "__tablename__": name,
        "id": Column(BigInt(), nullable=False, primary_key=True),
        "name": Column(Text()),
        "amount": Column(Numeric(12, 2)),
        "at": Column(TimestampTZ()),
        "payload": Column(Jsonb()),
        "raw": Column(Bytea()),
        "note": Column(String(10)),
    }
    return type(f"T_{name}", (ManagedTable,), attrs)


#: Columns that do not depend on when or in which batch the rows were loaded.
STABLE = {
    "merge": "id, name, amount, at, payload, raw, note",
    "scd1": "id, name, amount, at, payload, raw, note, row_hash",
    "scd2": "id, name, amount, at, payload, raw, note, row_hash, is_current, valid_to",
    "append": "id, name, amount, at, payload, raw, note",
}


def binary(env: Any, name: str, cols: str) -> bytes:
    out = bytearray()
    with psycopg.connect(env.dbs.warehouse_url) as c, c.cursor() as cur:
        q = sql.SQL("COPY (SELECT {} FROM wh.{} ORDER BY id) TO STDOUT (FORMAT BINARY)").format(
            sql.SQL(cols), sql.Identifier(name)
        )
        with cur.copy(q) as copy:
            for block in copy:
                out += block
    return bytes(out)


def source(env: Any, path: str, query: str = ROWS) -> Source:
    return Source.postgres_query(env.warehouse if path == "same_db" else env.source, query)


def create_only(env: Any, options: TargetOptions, src: Source) -> None:
    """The table exists (empty) before the run: the run stages and upserts."""
    fresh = plan(options, src, env.warehouse, pipeline="p")
    ddl = [s for s in (*fresh.steps, *fresh.fallback_steps) if s.kind == "ddl"]
    env.wh(*(s.sql for s in ddl))  # the keys a direct load builds after it, too


@pytest.fixture
def schemas(env: Any) -> Any:
    env.wh("CREATE SCHEMA wh")
    return env


@pytest.mark.parametrize("path", PATHS)
def test_direct_load_equals_the_staged_load(schemas: Any, path: str) -> None:
    for mode in MODES:
        direct_equals_staged(schemas, mode, path)


def direct_equals_staged(env: Any, mode: str, path: str) -> None:
    src = source(env, path)
    direct_opts = TargetOptions(table=table(f"direct_{mode}").__table_spec__, mode=mode)
    staged_opts = TargetOptions(table=table(f"staged_{mode}").__table_spec__, mode=mode)
    create_only(env, staged_opts, src)

    direct = execute(plan(direct_opts, src, env.warehouse, pipeline="p"))
    staged = execute(plan(staged_opts, src, env.warehouse, pipeline="p"))

    assert direct.status == staged.status == "succeeded", (direct.error, staged.error)
    assert direct.path == staged.path == path
    kinds = [s.kind for s in direct.steps if s.kind in ("load", "copy", "data")]
    assert kinds == ["load"] * len(kinds) and kinds  # the load, then its keys built after
    assert "load" not in [s.kind for s in staged.steps]
    assert direct.fallback is None
    assert direct.rows_inserted == staged.rows_inserted == 4
    assert direct.source_rows == staged.source_rows == 4
    assert binary(env, f"direct_{mode}", STABLE[mode]) == binary(
        env, f"staged_{mode}", STABLE[mode]
    )
    if mode in ("append", "scd1", "scd2"):
        # the run's own batch id and run time, the same on every row
        when = {"append": "_loaded_at", "scd1": "_updated_at", "scd2": "valid_from"}[mode]
        batch = "_batch_id::text" if mode == "append" else "%s"
        (row,) = env.rows(
            f"SELECT count(DISTINCT {batch}), min({batch}), count(DISTINCT {when}), "
            f"bool_and(abs(extract(epoch FROM {when} - now())) < 600) FROM wh.direct_{mode}",
            params=None if mode == "append" else (direct.batch_id, direct.batch_id),
        )
        assert row == (1, direct.batch_id, 1, True)
    # A second run finds every row unchanged: the direct load's hashes are the target's.
    again = execute(plan(direct_opts, src, env.warehouse, pipeline="p"))
    assert again.status == "succeeded", again.error
    if mode != "append":
        assert (again.rows_inserted, again.rows_updated) == (0, 0)


@pytest.mark.parametrize("path", PATHS)
def test_a_key_twice_in_the_first_batch_fails_as_the_staged_run_does(
    schemas: Any, path: str
) -> None:
    for mode in ("merge", "scd2", "append"):
        key_twice(schemas, mode, path)


def key_twice(env: Any, mode: str, path: str) -> None:
    twice = "SELECT * FROM (" + ROWS + ") AS r UNION ALL SELECT * FROM (" + ROWS + ") AS r2 "
    twice += "WHERE id = 2"
    src = source(env, path, twice)
    direct_opts = TargetOptions(table=table(f"dd_{mode}").__table_spec__, mode=mode)
    staged_opts = TargetOptions(table=table(f"ds_{mode}").__table_spec__, mode=mode)
    create_only(env, staged_opts, src)

    direct = execute(plan(direct_opts, src, env.warehouse, pipeline="p"))
    staged = execute(plan(staged_opts, src, env.warehouse, pipeline="p"))

    assert direct.status == staged.status == "failed"
    assert direct.fallback is not None  # the load was rolled back, the staged plan ran
    assert staged.error is not None and "2" in staged.error
    assert direct.error == staged.error.replace(f"wh.ds_{mode}", f"wh.dd_{mode}")
    # nothing committed: not even the table the run would have created
    assert env.rows(f"SELECT to_regclass('wh.dd_{mode}') IS NULL") == [(True,)]


@pytest.mark.parametrize("path", PATHS)
def test_direct_load_stores_the_watermark_and_refuses_null_values(schemas: Any, path: str) -> None:
    env = schemas
    opts = TargetOptions(table=table("inc").__table_spec__, mode="merge", incremental_column="at")
    nulls = execute(plan(opts, source(env, path), env.warehouse, pipeline="p"))
    assert nulls.status == "failed"
    assert "1 source row(s) have NULL in incremental_column='at'" in (nulls.error or "")
    assert env.rows("SELECT to_regclass('wh.inc') IS NULL") == [(True,)]

    query = ROWS + " WHERE at IS NOT NULL"
    ok = execute(plan(opts, source(env, path, query), env.warehouse, pipeline="p"))
    assert ok.status == "succeeded", ok.error
    assert "load" in [s.kind for s in ok.steps]
    assert ok.watermark_after == "infinity"
    (stored,) = env.rows("SELECT value FROM ematix_flow.watermarks WHERE target = 'wh.inc'")
    assert stored == ("infinity",)
