"""Two overlapping ``flow run-due`` processes run one schedule slot once.

Both decide "due" while neither has run; the first runs and commits, and only then
does the second reach its target lock. It must see, under the lock, that the slot is
served, and record ``skipped`` instead of appending every row a second time.

Each process is held inside the pipeline body (after its due-check, before its run)
on a PostgreSQL advisory lock the test holds; the test lets them go one after the
other, so the interleaving is fixed, not a matter of timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.db

MODULE = """
import os

import psycopg

from ematix_flow import pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text


class Events(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "events"
    id = Column(BigInt(), nullable=False)
    v = Column(Text())


@pipeline.register(name="{name}", schedule="0 0 1 1 *", targets=[Events],
                   connections=("warehouse",))
def events_sync():
    # Wait here until the test lets this process go (its gate is its own lock key).
    with psycopg.connect(os.environ["EMATIX_FLOW_DSN_WAREHOUSE"], autocommit=True) as c:
        c.execute("SELECT pg_advisory_lock(%s)", (int(os.environ["GATE"]),))
    return pipeline.sync(
        target=Events,
        source=Source.postgres_query("warehouse", "SELECT id, v FROM src"),
        target_connection="warehouse",
        mode="append",
    )
"""


def start(module: str, gate: int, url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"EMATIX_FLOW_DSN_WAREHOUSE": url, "GATE": str(gate), "NO_COLOR": "1"}
    flow = Path(sys.executable).with_name("flow")
    return subprocess.Popen(
        [str(flow), "run-due", "--module", module, "--format", "json"],
        env=env,
        cwd=os.getcwd(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_waiter(pg: psycopg.Connection[Any], gate: int, proc: subprocess.Popen[str]) -> None:
    """Until ``proc`` waits on ``gate`` (it has decided "due" and entered the body)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        row = pg.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND objid = %s AND database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())",
            (gate,),
        ).fetchone()
        if row and row[0]:
            return
        if proc.poll() is not None:
            pytest.fail(f"run-due ended before reaching its gate: {proc.communicate()}")
        time.sleep(0.05)
    pytest.fail(f"run-due never reached gate {gate}")


def test_overlapping_run_due_runs_a_slot_once(dbs: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    module, name = f"due_race_{tag}", f"events_sync_{tag}"
    Path(f"{module}.py").write_text(MODULE.format(name=name))
    gate_a, gate_b = 91_000_001, 91_000_002
    with psycopg.connect(dbs.warehouse_url, autocommit=True) as pg:
        pg.execute("CREATE TABLE src (id bigint, v text)")
        pg.execute("INSERT INTO src SELECT g, 'v' || g FROM generate_series(1, 5) g")
        pg.execute("SELECT pg_advisory_lock(%s), pg_advisory_lock(%s)", (gate_a, gate_b))
        a = start(module, gate_a, dbs.warehouse_url)
        b = start(module, gate_b, dbs.warehouse_url)
        try:
            wait_for_waiter(pg, gate_a, a)
            wait_for_waiter(pg, gate_b, b)  # both have decided "due"
            pg.execute("SELECT pg_advisory_unlock(%s)", (gate_a,))
            out_a, err_a = a.communicate(timeout=120)
            assert a.returncode == 0, (out_a, err_a)
            pg.execute("SELECT pg_advisory_unlock(%s)", (gate_b,))
            out_b, err_b = b.communicate(timeout=120)
        finally:
            for proc in (a, b):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        history = pg.execute(
            "SELECT status, error FROM ematix_flow.run_history WHERE pipeline = %s "
            "ORDER BY started_at",
            (name,),
        ).fetchall()
        loaded = pg.execute("SELECT count(*), count(DISTINCT id) FROM wh.events").fetchone()
    assert [h[0] for h in history] == ["succeeded", "skipped"], (history, out_b, err_b)
    assert history[1][1].startswith("already ran for slot ")
    assert "already ran for slot" in out_b
    assert loaded == (5, 5)
