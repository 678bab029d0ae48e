"""Every mode gives the same target through the same-DB and the cross-DB path, over
NULLs, numerics, timestamptz, jsonb, unicode text and identifiers that need quoting."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from ematix_flow import pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import (
    BigInt,
    Boolean,
    Column,
    Numeric,
    String,
    Text,
    TimestampTZ,
)
from ematix_flow.types import (
    Jsonb as JsonbT,
)

pytestmark = pytest.mark.db

T1 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
T2 = datetime(2024, 6, 1, 8, 30, 15, 123456, tzinfo=UTC)


class Dim(ManagedTable):
    __schema__ = "Wh Schema"
    __tablename__ = "Customer Dim"

    id = Column(BigInt(), nullable=False, primary_key=True)
    full_name = Column(Text())
    amount = Column(Numeric(12, 2))
    seen = Column(TimestampTZ())
    doc = Column(JsonbT())
    flag = Column(Boolean())
    code = Column(String(8))


# full_name → "Full Name" in the source: a quoted identifier on the way in.
SRC_DDL = (
    'CREATE SCHEMA "Src"',
    'CREATE TABLE "Src"."people" (id bigint, "Full Name" text, amount numeric, '
    "seen timestamptz, doc jsonb, flag boolean, code text)",
)
QUERY = 'SELECT id, "Full Name" AS full_name, amount, seen, doc, flag, code FROM "Src"."people"'

SNAP1 = [
    (1, "Zoë", Decimal("10.50"), T1, {"a": 1}, True, "x"),
    (2, None, None, None, None, None, None),
    (3, "日本語 ✓", Decimal("-0.01"), T2, {"k": [1, 2], "s": "ü"}, False, "y"),
]
SNAP2 = [
    (1, "Zoë Q", Decimal("10.50"), T1, {"a": 1}, True, "x"),  # changed
    (2, None, None, None, None, None, None),  # unchanged, all NULL
    (4, "new", Decimal("99999.99"), T2, [], None, ""),  # new
]  # 3 deleted
SNAP3 = [
    (1, "Zoë Q", Decimal("10.50"), T1, {"a": 1}, True, "x"),
    (3, "日本語 ✓", Decimal("-0.01"), T2, {"k": [1, 2], "s": "ü"}, False, "y"),  # returns
    (4, "new", Decimal("99999.99"), T2, [], None, ""),
]  # 2 deleted


def load(env: Any, which: str, rows: list[tuple[Any, ...]]) -> None:
    run = env.src if which == "source" else env.wh
    run('TRUNCATE "Src"."people"')
    for r in rows:
        run(
            'INSERT INTO "Src"."people" VALUES (%s, %s, %s, %s, %s, %s, %s)',
            params=(*r[:4], None if r[4] is None else Jsonb(r[4]), *r[5:]),
        )


def run_sequence(env: Any, path: str, mode: str, deletes: str | None) -> list[dict[str, Any]]:
    which = "source" if path == "cross_db" else "warehouse"
    (env.src if which == "source" else env.wh)(*SRC_DDL)
    conn = env.source if which == "source" else env.warehouse
    out = []
    for snap in (SNAP1, SNAP2, SNAP2, SNAP3):
        load(env, which, snap)
        out.append(
            pipeline.sync(
                target=Dim,
                source=Source.postgres_query(conn, QUERY),
                target_connection=env.warehouse,
                mode=mode,
                handle_deletes=deletes,
                force_path=path,
            )
        )
    return out


def final(env: Any, mode: str) -> list[tuple[Any, ...]]:
    cols = "id, full_name, amount, seen, doc, flag, code"
    if mode == "scd2":
        cols += ", is_current, valid_to IS NULL, row_hash"
    elif mode == "scd1":
        cols += ", row_hash"
    rows = env.table(
        "Wh Schema", "Customer Dim", "1, 2" if mode != "scd2" else "1, valid_from", cols
    )
    if (
        mode == "merge"
        and env.rows(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = '_deleted_at'"
        )[0][0]
    ):
        flags = env.table("Wh Schema", "Customer Dim", "id", "id, _deleted_at IS NOT NULL")
        return [(*r, f[1]) for r, f in zip(rows, flags, strict=True)]
    return rows


COUNTS = ("rows_inserted", "rows_updated", "rows_deleted", "rows_unchanged")


def counts(results: list[dict[str, Any]]) -> list[tuple[int, ...]]:
    return [tuple(r[k] for k in COUNTS) for r in results]


@pytest.mark.parametrize(
    ("mode", "deletes"),
    [
        ("merge", None),
        ("merge", "hard"),
        ("merge", "soft"),
        ("scd1", None),
        ("scd1", "soft"),
        ("scd2", None),
        ("scd2", "soft"),
    ],
)
def test_same_result_through_both_paths(dbs: Any, mode: str, deletes: str | None) -> None:
    from tests.engine.conftest import Env

    results = {}
    tables = {}
    for path in ("same_db", "cross_db"):
        env = Env(dbs)
        env.wh('DROP SCHEMA IF EXISTS "Wh Schema" CASCADE', 'DROP SCHEMA IF EXISTS "Src" CASCADE')
        env.src('DROP SCHEMA IF EXISTS "Src" CASCADE')
        env.wh("DROP SCHEMA IF EXISTS ematix_flow CASCADE")
        out = run_sequence(env, path, mode, deletes)
        assert all(r["status"] == "succeeded" and r["path"] == path for r in out)
        results[path] = counts(out)
        tables[path] = final(env, mode)
    assert results["same_db"] == results["cross_db"]
    assert tables["same_db"] == tables["cross_db"]
    c = results["same_db"]
    assert c[0] == (3, 0, 0, 0)  # initial load
    assert c[2][1] == 0 and c[2][0] == 0  # unchanged re-run writes nothing
    table = tables["same_db"]
    if mode in ("merge", "scd1"):
        ids = [r[0] for r in table]
        if deletes == "hard":
            assert ids == [1, 3, 4] and c[1][2] == 1 and c[3][2] == 1
        else:
            assert ids == [1, 2, 3, 4]
        assert c[1][:2] == (1, 1)  # 4 inserted, 1 updated
        row1 = next(r for r in table if r[0] == 1)
        assert row1[1] == "Zoë Q" and row1[2] == Decimal("10.50") and row1[3] == T1
        row4 = next(r for r in table if r[0] == 4)
        assert row4[4] == [] and row4[5] is None and row4[6] == ""
        if deletes == "soft" and mode == "merge":
            assert [(r[0], r[-1]) for r in table] == [(1, False), (2, True), (3, False), (4, False)]
            assert c[1][2] == 1 and c[2][2] == 0  # a tombstone is written once
    if mode == "scd2":
        versions = {}
        for r in table:
            versions.setdefault(r[0], []).append(r)
        assert [v[-2] for v in versions[1]] == [False, True]  # closed, current
        assert sum(v[-3] for v in versions[1]) == 1
        if deletes:
            # 3 deleted in SNAP2 then returned: closed version + new current version
            assert [(v[-3], v[-2]) for v in versions[3]] == [(False, False), (True, True)]
            assert versions[2][-1][-3] is False  # deleted in SNAP3: closed, once
            assert len(versions[2]) == 1
        else:
            assert len(versions[3]) == 1 and versions[3][0][-3] is True


@pytest.mark.parametrize("path", ["same_db", "cross_db"])
def test_append_stamps_batch_and_load_time(env: Any, path: str) -> None:
    class Events(ManagedTable):
        __schema__ = "wh"
        __tablename__ = "events"
        id = Column(BigInt(), nullable=False)
        payload = Column(JsonbT())

    which = env.src if path == "cross_db" else env.wh
    which(
        "CREATE TABLE ev (id bigint, payload jsonb)", "INSERT INTO ev VALUES (1, '{}'), (2, NULL)"
    )
    conn = env.source if path == "cross_db" else env.warehouse
    kw = dict(target=Events, source=Source.postgres_query(conn, "SELECT * FROM ev"),
              target_connection=env.warehouse, mode="append", force_path=path)  # fmt: skip
    first = pipeline.sync(**kw)
    second = pipeline.sync(**kw)
    assert (first["rows_inserted"], second["rows_inserted"]) == (2, 2)
    rows = env.rows("SELECT _batch_id::text, count(*) FROM wh.events GROUP BY 1 ORDER BY 2")
    assert sorted(r[0] for r in rows) == sorted([first["batch_id"], second["batch_id"]])
    assert env.rows("SELECT count(*) FROM wh.events WHERE _loaded_at IS NULL") == [(0,)]


@pytest.mark.parametrize("path", ["same_db", "cross_db"])
def test_source_sql_with_percent_semicolon_and_trailing_comment(env: Any, path: str) -> None:
    class Pct(ManagedTable):
        __schema__ = "wh"
        __tablename__ = "pct"
        id = Column(BigInt(), nullable=False, primary_key=True)
        label = Column(Text())

    run = env.src if path == "cross_db" else env.wh
    run("CREATE TABLE p (id bigint, label text)", "INSERT INTO p VALUES (1, '50%'), (2, 'x')")
    conn = env.source if path == "cross_db" else env.warehouse
    query = "SELECT id, label FROM p WHERE label LIKE '%\\%%' ESCAPE '\\' -- only percentages;\n;"
    result = pipeline.sync(
        target=Pct,
        source=Source.postgres_query(conn, query),
        target_connection=env.warehouse,
        mode="merge",
        force_path=path,
    )
    assert result["rows_inserted"] == 1
    assert env.rows("SELECT id, label FROM wh.pct") == [(1, "50%")]
