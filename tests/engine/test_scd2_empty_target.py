"""An scd2 load into a target whose statistics say "empty" must stay linear.

Found by the benchmark work: when the target table exists and was ANALYZEd while empty
(a maintenance ``ANALYZE``/``vacuumdb -Z``, or a first run whose source was empty),
PostgreSQL estimates it at one row and plans the "no current version yet" anti-join of
the scd2 statement as a nested loop with a sequential scan of the target on the inner
side. The same statement is inserting into that target, so every rescan walks all the
pages inserted so far: the load becomes quadratic (N = 100,000: > 120 s instead of
0.4 s; with ``SET LOCAL enable_nestloop = off`` the planner takes the hash anti-join).

No timing is measured: the target's heap block accesses (``pg_statio_user_tables``)
are counted instead. A linear plan touches about one block per inserted row; the
quadratic one touches every block again for every source row.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from ematix_flow import _core, pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text

pytestmark = pytest.mark.db

ROWS = 4000


class Dim(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "dim_hist"

    id = Column(BigInt(), nullable=False, primary_key=True)
    label = Column(Text())


def _heap_blocks(dbs: Any) -> int:
    """Heap blocks of the target read or hit so far, once every other session ended."""
    dbname = psycopg.conninfo.conninfo_to_dict(dbs.warehouse_url)["dbname"]
    deadline = time.monotonic() + 30
    with psycopg.connect(dbs.server_url, autocommit=True) as admin:
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,)
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "sessions of the run did not end"
            time.sleep(0.05)
    with dbs.connect("warehouse") as conn:
        row = conn.execute(
            "SELECT coalesce(heap_blks_read, 0) + coalesce(heap_blks_hit, 0) "
            "FROM pg_statio_user_tables WHERE schemaname = 'wh' AND relname = 'dim_hist'"
        ).fetchone()
    return int(row[0])


def test_scd2_load_into_an_analyzed_empty_target_is_linear(dbs: Any) -> None:
    with dbs.connect("warehouse") as conn:
        conn.execute("CREATE SCHEMA src")
        conn.execute("CREATE TABLE src.dim (id bigint PRIMARY KEY, label text)")
    conn_obj = _core.connect(dbs.warehouse_url)

    def sync() -> dict[str, Any]:
        return pipeline.sync(
            target=Dim,
            source=Source.postgres_query(conn_obj, "SELECT id, label FROM src.dim"),
            target_connection=conn_obj,
            mode="scd2",
        )

    assert sync()["rows_inserted"] == 0  # creates the (empty) target
    with dbs.connect("warehouse") as conn:
        conn.execute("ANALYZE wh.dim_hist")
        conn.execute(
            "INSERT INTO src.dim SELECT g, 'label ' || g FROM generate_series(1, %s) g",
            (ROWS,),
        )
    before = _heap_blocks(dbs)
    assert sync()["rows_inserted"] == ROWS
    touched = _heap_blocks(dbs) - before
    # linear: ~1 block access per inserted row; quadratic: ~ROWS * pages / 2
    assert touched < 3 * ROWS, f"{touched} heap block accesses for {ROWS} rows"
