"""What crosses runs is typed and canonical: watermarks record their column and type, a
watermark or row hash written by an earlier version is migrated once, without reloading
rows or opening versions, and a changed ``incremental_column`` is refused with the way
out instead of being compared against the old column's value.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from ematix_flow import _core, pipeline
from ematix_flow._engine.sql_common import HASH_VERSION
from ematix_flow._errors import EmatixFlowError
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Date, Text, Timestamp

pytestmark = pytest.mark.db


class Events(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "events"

    id = Column(BigInt(), nullable=False, primary_key=True)
    name = Column(Text())
    ts = Column(Timestamp())
    day = Column(Date())


class Dim(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "dim"

    id = Column(BigInt(), nullable=False, primary_key=True)
    name = Column(Text())
    city = Column(Text())


def _source(dbs: Any) -> None:
    with dbs.connect("source") as c:
        c.execute("CREATE SCHEMA app")
        c.execute("CREATE TABLE app.e (id bigint PRIMARY KEY, name text, ts timestamp, day date)")
        c.execute("INSERT INTO app.e VALUES (1, 'a', '2024-03-04 10:00', '2024-03-04')")


def _sync(dbs: Any, **kw: Any) -> dict[str, Any]:
    return pipeline.sync(
        target=Events,
        source=Source.postgres_query(_core.connect(dbs.source_url), "SELECT * FROM app.e"),
        target_connection=_core.connect(dbs.warehouse_url),
        mode="merge",
        **kw,
    )


def _watermarks(dbs: Any) -> list[tuple[Any, ...]]:
    with dbs.connect() as c:
        return c.execute(
            "SELECT column_name, column_type, value FROM ematix_flow.watermarks"
        ).fetchall()


def test_watermark_records_its_column_and_type_and_canonical_value(dbs: Any) -> None:
    _source(dbs)
    with dbs.connect() as c:
        c.execute(
            sql.SQL("ALTER DATABASE {} SET datestyle = 'SQL, DMY'").format(
                sql.Identifier(c.info.dbname)
            )
        )
    _sync(dbs, incremental_column="ts")
    assert _watermarks(dbs) == [("ts", "timestamp without time zone", "2024-03-04 10:00:00")]


def test_a_version_1_watermark_is_read_under_the_settings_it_was_written_in(dbs: Any) -> None:
    """A watermark stored before sessions were pinned, as '04/03/2024 10:00:00' under
    the warehouse's DateStyle 'SQL, DMY', means 4 March: rows after it arrive, rows
    before it are not re-read, and the next run stores the canonical form."""
    _source(dbs)
    _sync(dbs, incremental_column="ts")
    with dbs.connect() as c:
        c.execute(
            sql.SQL("ALTER DATABASE {} SET datestyle = 'SQL, DMY'").format(
                sql.Identifier(c.info.dbname)
            )
        )
        c.execute(
            "UPDATE ematix_flow.watermarks SET column_type = NULL, value = '04/03/2024 10:00:00'"
        )
    with dbs.connect("source") as c:
        c.execute(
            "INSERT INTO app.e VALUES (2, 'b', '2024-03-10 00:00', '2024-03-10'), "
            "(3, 'c', '2024-04-01 00:00', '2024-04-01')"
        )
    result = _sync(dbs, incremental_column="ts")
    # read '>=' the stored maximum: row 1 is re-read and left alone, 2 and 3 arrive
    assert (result["rows_inserted"], result["rows_unchanged"]) == (2, 1)
    assert _watermarks(dbs) == [("ts", "timestamp without time zone", "2024-04-01 00:00:00")]


def test_a_changed_incremental_column_is_refused_with_the_way_out(dbs: Any) -> None:
    _source(dbs)
    _sync(dbs, incremental_column="ts")
    with pytest.raises(EmatixFlowError) as err:
        _sync(dbs, incremental_column="day")
    message = str(err.value)
    assert "'ts'" in message and "'day'" in message and "2024-03-04 10:00:00" in message
    assert "DELETE FROM ematix_flow.watermarks" in message and "new name" in message
    assert _watermarks(dbs) == [("ts", "timestamp without time zone", "2024-03-04 10:00:00")]
    # the preview names it too, before anything runs
    from ematix_flow._engine.options import TargetOptions
    from ematix_flow._engine.plan import plan
    from ematix_flow.table import table_spec

    p = plan(
        TargetOptions(table=table_spec(Events), mode="merge", incremental_column="day"),
        Source.postgres_query(_core.connect(dbs.source_url), "SELECT * FROM app.e"),
        _core.connect(dbs.warehouse_url),
        pipeline=pipeline.AD_HOC,
    )
    assert any("incremental_column" in pr.message for pr in p.problems)


def _dim_source(dbs: Any, rows: list[tuple[Any, ...]]) -> None:
    with dbs.connect() as c:
        c.execute("CREATE SCHEMA IF NOT EXISTS app")
        c.execute("DROP TABLE IF EXISTS app.d")
        c.execute("CREATE TABLE app.d (id bigint, name text, city text)")
        with c.cursor() as cur:
            cur.executemany("INSERT INTO app.d VALUES (%s, %s, %s)", rows)


def _dim_sync(dbs: Any, mode: str, path: str) -> dict[str, Any]:
    url = dbs.warehouse_url
    return pipeline.sync(
        target=Dim,
        source=Source.postgres_query(_core.connect(url), "SELECT id, name, city FROM app.d"),
        target_connection=_core.connect(url),
        mode=mode,
        force_path=path,
    )


@pytest.mark.parametrize("mode", ["scd1", "scd2"])
@pytest.mark.parametrize("path", ["same_db", "cross_db"])
def test_a_table_with_the_old_row_hash_is_migrated_without_opening_versions(
    dbs: Any, mode: str, path: str
) -> None:
    rows = [(1, "a", "Oslo"), (2, "b", None), (3, None, None)]
    _dim_source(dbs, rows)
    _dim_sync(dbs, mode, path)
    with dbs.connect() as c:
        # What an earlier version left: md5(ROW(compare columns)::text), no version
        # recorded for the table.
        c.execute("UPDATE wh.dim SET row_hash = md5(ROW(name, city)::text)")
        c.execute("DELETE FROM ematix_flow.target_tables")
        versions = c.execute("SELECT count(*) FROM wh.dim").fetchone()
    result = _dim_sync(dbs, mode, path)
    assert (result["rows_inserted"], result["rows_updated"], result["rows_unchanged"]) == (0, 0, 3)
    with dbs.connect() as c:
        assert c.execute("SELECT count(*) FROM wh.dim").fetchone() == versions
        recorded = c.execute("SELECT target, row_hash_version FROM ematix_flow.target_tables")
        assert recorded.fetchall() == [("wh.dim", HASH_VERSION)]
    # and a real change after the migration is still seen
    _dim_source(dbs, [(1, "a", "Bergen"), (2, "b", None), (3, None, None)])
    assert _dim_sync(dbs, mode, path)["rows_updated"] == 1


def test_the_row_hash_ignores_declaration_order_and_all_null_columns(dbs: Any) -> None:
    """The same data hashed through two declarations — columns in another order, and
    one more nullable column that is NULL everywhere — gives the same hashes."""

    class A(ManagedTable):
        __schema__ = "wh"
        __tablename__ = "a"
        id = Column(BigInt(), nullable=False, primary_key=True)
        name = Column(Text())
        city = Column(Text())

    class B(ManagedTable):
        __schema__ = "wh"
        __tablename__ = "b"
        id = Column(BigInt(), nullable=False, primary_key=True)
        extra = Column(Text())
        city = Column(Text())
        name = Column(Text())

    _dim_source(dbs, [(1, "a", "Oslo"), (2, None, "x"), (3, "y", None)])
    conn = _core.connect(dbs.warehouse_url)
    pipeline.sync(
        target=A,
        source=Source.postgres_query(conn, "SELECT id, name, city FROM app.d"),
        target_connection=conn,
        mode="scd2",
    )
    pipeline.sync(
        target=B,
        source=Source.postgres_query(conn, "SELECT id, NULL::text AS extra, city, name FROM app.d"),
        target_connection=conn,
        mode="scd2",
    )
    with dbs.connect() as c:
        a = c.execute("SELECT id, row_hash FROM wh.a ORDER BY id").fetchall()
        b = c.execute("SELECT id, row_hash FROM wh.b ORDER BY id").fetchall()
    assert a == b


def test_preview_names_the_row_hash_migration(dbs: Any) -> None:
    from ematix_flow._engine.options import TargetOptions
    from ematix_flow._engine.plan import plan
    from ematix_flow.table import table_spec

    _dim_source(dbs, [(1, "a", "Oslo")])
    _dim_sync(dbs, "scd2", "same_db")
    with dbs.connect() as c:
        c.execute("DELETE FROM ematix_flow.target_tables")
    conn = _core.connect(dbs.warehouse_url)
    p = plan(
        TargetOptions(table=table_spec(Dim), mode="scd2"),
        Source.postgres_query(conn, "SELECT id, name, city FROM app.d"),
        conn,
        pipeline=pipeline.AD_HOC,
    )
    assert "earlier row hash" in p.decision("row_hash").reason
    assert [s.label for s in p.steps if "row_hash" in s.label] == [
        "migrate row_hash to the canonical hash"
    ]


def test_every_engine_session_is_pinned(dbs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the client's environment says, a session opened by the engine runs in
    UTC, ISO dates, UTF-8, with a bounded lock wait."""
    monkeypatch.setenv("PGOPTIONS", "-c DateStyle=SQL,DMY -c IntervalStyle=sql_standard")
    monkeypatch.setenv("PGTZ", "Asia/Kolkata")
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    monkeypatch.setenv("EMATIX_FLOW_LOCK_TIMEOUT", "7")
    with _core.connect(dbs.warehouse_url).open(autocommit=True) as pg:
        row = pg.execute(
            "SELECT current_setting('TimeZone'), current_setting('DateStyle'), "
            "current_setting('IntervalStyle'), current_setting('client_encoding'), "
            "current_setting('lock_timeout'), current_setting('bytea_output'), "
            "now()::date = (now() AT TIME ZONE 'UTC')::date"
        ).fetchone()
    assert row == ("UTC", "ISO, YMD", "postgres", "UTF8", "7s", "hex", True)
    with psycopg.connect(dbs.warehouse_url) as raw:  # the environment does reach others
        assert raw.execute("SHOW DateStyle").fetchone() == ("SQL, DMY",)
