"""Many ``flow run`` / ``flow run-due`` processes at once: exactly one writer per
target, no row written twice, every other run recorded as ``skipped``.

(tests/engine/test_concurrency.py covers two runs; here it is eight runs of one
pipeline, eight unforced runs of a merge, and three overlapping ``run-due``.) Overlap
is made certain, not lucky: the test holds an ``ACCESS EXCLUSIVE`` lock on a source
table, so the run that won the pipeline's advisory lock waits inside its transaction
while the others try theirs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.db

MODULE = """
from typing import Annotated
from ematix_flow import ematix, pk
from ematix_flow.types import BigInt, Text


@ematix.table(schema="wh", name="orders_log")
class OrdersLog:
    id: BigInt
    item: Text


@ematix.table(schema="wh", name="orders")
class Orders:
    id: Annotated[BigInt, pk()]
    item: Text


@ematix.table(schema="wh", name="refunds_log")
class RefundsLog:
    id: BigInt
    item: Text


@ematix.pipeline(target=OrdersLog, mode="append", source_connection="oltp",
                 schedule="0 0 1 1 *")
def orders_log(src, tgt):
    return "SELECT id, item FROM src.orders"


@ematix.pipeline(target=RefundsLog, mode="append", source_connection="oltp",
                 schedule="0 0 1 1 *")
def refunds_log(src, tgt):
    return "SELECT id, item FROM src.refunds"


@ematix.pipeline(target=Orders, mode="merge", source_connection="oltp")
def orders_merge(src, tgt):
    return "SELECT id, item FROM src.orders"
"""

ROWS = 300
FLAGS = ("--module", "par_pipes", "--format", "json")


@pytest.fixture
def project(dbs: Any) -> Path:
    with dbs.connect("source") as conn:
        conn.execute("CREATE SCHEMA src")
        for table in ("orders", "refunds"):
            conn.execute(f"CREATE TABLE src.{table} (id bigint PRIMARY KEY, item text)")
            conn.execute(
                f"INSERT INTO src.{table} SELECT g, 'item ' || g FROM generate_series(1, {ROWS}) g"
            )
    cwd = Path.cwd()
    (cwd / "par_pipes.py").write_text(MODULE)
    return cwd


def _start(dbs: Any, cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.update(EMATIX_FLOW_DSN_WAREHOUSE=dbs.warehouse_url, EMATIX_FLOW_DSN_OLTP=dbs.source_url)
    return subprocess.Popen(
        [sys.executable, "-m", "ematix_flow._cli.main", *args, *FLAGS],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, Any]:
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    return proc.returncode, json.loads(out)


def _wait(what: str, check: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _history(dbs: Any) -> list[tuple[str, str, int]]:
    with dbs.connect("warehouse") as conn:
        return conn.execute(
            "SELECT pipeline, status, rows_inserted FROM ematix_flow.run_history ORDER BY id"
        ).fetchall()


def _waiting_for(dbs: Any, table: str) -> int:
    """Sessions in the source database waiting for the lock on ``table``."""
    dbname = psycopg.conninfo.conninfo_to_dict(dbs.source_url)["dbname"]
    with psycopg.connect(dbs.server_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND wait_event_type = 'Lock' AND query ILIKE %s",
            (dbname, f"%src.{table}%"),
        ).fetchone()[0]


def test_eight_parallel_runs_one_writer_seven_skipped(dbs: Any, project: Path) -> None:
    blocker = psycopg.connect(dbs.source_url)
    blocker.execute("LOCK TABLE src.orders IN ACCESS EXCLUSIVE MODE")
    try:
        procs = [_start(dbs, project, "run", "orders_log") for _ in range(8)]
        _wait(
            "seven runs to end while one waits for the source",
            lambda: sum(p.poll() is not None for p in procs) == 7 and _waiting_for(dbs, "orders"),
        )
    finally:
        blocker.rollback()
        blocker.close()
    outcomes = [_finish(p) for p in procs]
    statuses = Counter(r["targets"][0]["status"] for _, r in outcomes)
    assert statuses == {"succeeded": 1, "skipped": 7}
    # A skipped run did no work: it exits RUN_FAILED (not every target succeeded).
    assert sorted(code for code, _ in outcomes) == [0] + [1] * 7
    with dbs.connect("warehouse") as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM wh.orders_log ORDER BY id")]
    assert ids == list(range(1, ROWS + 1)), "rows missing or written twice"
    assert Counter((p, s, n) for p, s, n in _history(dbs)) == {
        ("orders_log", "succeeded", ROWS): 1,
        ("orders_log", "skipped", None): 7,
    }


def test_eight_unforced_parallel_merges_converge_without_duplicates(
    dbs: Any, project: Path
) -> None:
    procs = [_start(dbs, project, "run", "orders_merge") for _ in range(8)]
    outcomes = [_finish(p) for p in procs]
    statuses = [r["targets"][0]["status"] for _, r in outcomes]
    assert set(statuses) <= {"succeeded", "skipped"} and "succeeded" in statuses
    with dbs.connect("warehouse") as conn:
        rows = conn.execute("SELECT id, item FROM wh.orders ORDER BY id").fetchall()
    with dbs.connect("source") as conn:
        assert rows == conn.execute("SELECT id, item FROM src.orders ORDER BY id").fetchall()
    history = _history(dbs)
    assert len(history) == 8
    # Every row was inserted exactly once over all the runs that wrote.
    assert sum(n for _, s, n in history if s == "succeeded") == ROWS
    assert Counter(s for _, s, _ in history) == Counter(statuses)


def test_overlapping_run_due_one_writer_per_target(dbs: Any, project: Path) -> None:
    orders = psycopg.connect(dbs.source_url)
    refunds = psycopg.connect(dbs.source_url)
    orders.execute("LOCK TABLE src.orders IN ACCESS EXCLUSIVE MODE")
    refunds.execute("LOCK TABLE src.refunds IN ACCESS EXCLUSIVE MODE")
    try:
        first = _start(dbs, project, "run-due")  # takes orders_log, waits
        _wait("the first run-due to wait for src.orders", lambda: _waiting_for(dbs, "orders"))
        second = _start(dbs, project, "run-due")  # orders_log skipped; takes refunds_log
        _wait("the second run-due to wait for src.refunds", lambda: _waiting_for(dbs, "refunds"))
        third = _start(dbs, project, "run-due")  # both skipped
        code3, items3 = _finish(third)
        refunds.rollback()  # the second ends: refunds_log written once
        code2, items2 = _finish(second)
    finally:
        refunds.close()
        orders.rollback()
        orders.close()
    code1, items1 = _finish(first)

    def statuses(items: list[dict[str, Any]]) -> dict[str, str | None]:
        return {
            i["pipeline"]: i["report"]["targets"][0]["status"] if i["report"] else None
            for i in items
        }

    assert statuses(items3) == {"orders_log": "skipped", "refunds_log": "skipped"}
    assert statuses(items2) == {"orders_log": "skipped", "refunds_log": "succeeded"}
    # By the time the first reached refunds_log, its slot had been served: not due.
    assert statuses(items1) == {"orders_log": "succeeded", "refunds_log": None}
    assert [i["due"] for i in items1] == [True, False]
    # A target skipped because another run-due holds it is not a failure.
    assert (code1, code2, code3) == (0, 0, 0)
    with dbs.connect("warehouse") as conn:
        for table in ("orders_log", "refunds_log"):
            ids = [r[0] for r in conn.execute(f"SELECT id FROM wh.{table} ORDER BY id")]
            assert ids == list(range(1, ROWS + 1)), f"{table}: rows missing or written twice"
    assert Counter(_history(dbs)) == {
        ("orders_log", "succeeded", ROWS): 1,
        ("orders_log", "skipped", None): 2,
        ("refunds_log", "succeeded", ROWS): 1,
        ("refunds_log", "skipped", None): 1,
    }
