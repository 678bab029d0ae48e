"""Two concurrent runs of one pipeline: one does the work, the other is recorded as
skipped and touches no data; no row is written twice.

Both runs are separate Python processes running the same registered pipeline (an
``append``, so a second load would show up as duplicate rows). To make the overlap
certain rather than lucky, the test holds an ``ACCESS EXCLUSIVE`` lock on the source
table: the first run takes the pipeline's advisory lock in the target and then waits
for the source; only when the test has seen both (in ``pg_locks`` /
``pg_stat_activity``) does it start the second run, which must end — skipped — while
the first still holds the lock. Then the source is released and the first run finishes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.db

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from ematix_flow import _core, pipeline
    from ematix_flow.source import Source
    from ematix_flow.table import ManagedTable
    from ematix_flow.types import BigInt, Column, Text

    class Orders(ManagedTable):
        __schema__ = "wh"
        __tablename__ = "orders_log"
        id = Column(BigInt(), nullable=False)
        item = Column(Text())

    source_url, warehouse_url = sys.argv[1], sys.argv[2]

    @pipeline.register(name="orders_sync")
    def orders_sync():
        return pipeline.sync(
            target=Orders,
            source=Source.postgres_query(
                _core.connect(source_url), "SELECT id, item FROM src.orders"
            ),
            target_connection=_core.connect(warehouse_url),
            mode="append",
        )

    report = pipeline.run("orders_sync")
    print(json.dumps(report.to_dict(), default=str))
    """
)


def _dbname(url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(url)["dbname"]


def _wait(what: str, check: Callable[[], bool], procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if check():
            return
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                pytest.fail(f"a run ended while waiting for {what}: {out}{err}")
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.parametrize("path", ["cross_db", "same_db"])
def test_second_concurrent_run_is_skipped_and_writes_nothing(
    dbs: Any, tmp_path: Path, path: str
) -> None:
    source_db = "source" if path == "cross_db" else "warehouse"
    source_url = dbs.source_url if path == "cross_db" else dbs.warehouse_url
    with dbs.connect(source_db) as conn:
        conn.execute("CREATE SCHEMA src")
        conn.execute("CREATE TABLE src.orders (id bigint PRIMARY KEY, item text)")
        conn.execute("INSERT INTO src.orders SELECT g, 'item ' || g FROM generate_series(1, 500) g")
    script = tmp_path / "orders.py"
    script.write_text(SCRIPT)

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(script), source_url, dbs.warehouse_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    watcher = psycopg.connect(dbs.server_url, autocommit=True)
    blocker = psycopg.connect(source_url)  # holds the source lock in an open transaction
    try:
        blocker.execute("LOCK TABLE src.orders IN ACCESS EXCLUSIVE MODE")
        first = start()

        def first_holds_the_pipeline_lock() -> bool:
            return bool(
                watcher.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                    "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = %s",
                    (_dbname(dbs.warehouse_url),),
                ).fetchone()[0]
            )

        def first_waits_for_the_source() -> bool:
            return bool(
                watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                    "AND wait_event_type = 'Lock' AND query ILIKE %s",
                    (_dbname(source_url), "%src.orders%"),
                ).fetchone()[0]
            )

        _wait("the first run to take the pipeline lock", first_holds_the_pipeline_lock, [first])
        _wait("the first run to wait for the source", first_waits_for_the_source, [first])

        second = start()
        try:
            out, err = second.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            second.kill()
            pytest.fail("the second run waited for the first instead of skipping")
        skipped = json.loads(out.strip().splitlines()[-1])
        assert [t["status"] for t in skipped["targets"]] == ["skipped"], err
        assert skipped["targets"][0]["rows_inserted"] == 0
        assert first.poll() is None, "the first run should still be waiting for the source"
    finally:
        blocker.rollback()
        blocker.close()
        watcher.close()

    out, err = first.communicate(timeout=120)
    done = json.loads(out.strip().splitlines()[-1])
    assert done["ok"], err
    assert [(t["status"], t["rows_inserted"]) for t in done["targets"]] == [("succeeded", 500)]

    with dbs.connect("warehouse") as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM wh.orders_log ORDER BY id")]
        history = conn.execute(
            "SELECT pipeline, target, status, rows_inserted FROM ematix_flow.run_history "
            "ORDER BY id"
        ).fetchall()
    assert ids == list(range(1, 501)), "rows missing or written twice"
    assert history == [
        ("orders_sync", "wh.orders_log", "skipped", None),
        ("orders_sync", "wh.orders_log", "succeeded", 500),
    ]
