"""A run killed with SIGKILL in the middle of a large cross-DB copy leaves the target,
its watermark and the run history exactly as they were, and the next run completes.

The run is a separate Python process running a registered pipeline (one incremental
merge). The
test watches the target database's ``pg_stat_progress_copy`` until the run's COPY into
its stage has taken rows, then kills the process with SIGKILL (no handler, no clean-up
code runs). The server then ends the orphaned session and rolls its transaction back;
everything the test compares is read row for row before and after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.db

#: Rows that arrive after the first run: large enough that the copy lasts a while.
NEW_ROWS = 800_000

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from ematix_flow import _core, pipeline
    from ematix_flow.source import Source
    from ematix_flow.table import ManagedTable
    from ematix_flow.types import BigInt, Column, Text, TimestampTZ

    class Big(ManagedTable):
        __schema__ = "wh"
        __tablename__ = "big"
        id = Column(BigInt(), nullable=False, primary_key=True)
        payload = Column(Text())
        ts = Column(TimestampTZ(), nullable=False)

    source_url, warehouse_url = sys.argv[1], sys.argv[2]

    @pipeline.register(name="big_sync")
    def big_sync():
        return pipeline.sync(
            target=Big,
            source=Source.postgres_query(
                _core.connect(source_url), "SELECT id, payload, ts FROM src.big"
            ),
            target_connection=_core.connect(warehouse_url),
            mode="merge",
            keys=("id",),
            incremental_column="id",
        )

    report = pipeline.run("big_sync")
    print(json.dumps(report.to_dict(), default=str))
    sys.exit(0 if report.ok else 1)
    """
)


def _start(tmp_path: Path, dbs: Any) -> subprocess.Popen[str]:
    script = tmp_path / "run_sync.py"
    script.write_text(SCRIPT)
    return subprocess.Popen(
        [sys.executable, str(script), dbs.source_url, dbs.warehouse_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(tmp_path: Path, dbs: Any) -> dict[str, Any]:
    proc = _start(tmp_path, dbs)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err or out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["ok"] and len(report["targets"]) == 1, report
    return report["targets"][0]


def _state(dbs: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the killed run could have touched in the target database."""
    with dbs.connect("warehouse") as conn:
        return {
            "target": conn.execute("SELECT * FROM wh.big ORDER BY id").fetchall(),
            "watermarks": conn.execute(
                "SELECT * FROM ematix_flow.watermarks ORDER BY pipeline, target"
            ).fetchall(),
            "run_history": conn.execute(
                "SELECT * FROM ematix_flow.run_history ORDER BY id"
            ).fetchall(),
            "tables": conn.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN "
                "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
                "ORDER BY 1, 2"
            ).fetchall(),
        }


def _wait_for_copy(dbs: Any, proc: subprocess.Popen[str], timeout: float = 120) -> int:
    """Poll until the run's COPY into the target has taken rows; return that count."""
    dbname = psycopg.conninfo.conninfo_to_dict(dbs.warehouse_url)["dbname"]
    deadline = time.monotonic() + timeout
    with dbs.connect("warehouse") as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT tuples_processed FROM pg_stat_progress_copy "
                "WHERE datname = %s AND command = 'COPY FROM' AND tuples_processed > 0",
                (dbname,),
            ).fetchone()
            if row is not None:
                return int(row[0])
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"the run ended before it was seen copying: {out}{err}")
            time.sleep(0.005)
    pytest.fail("the run was never seen copying into the target")


def _wait_for_sessions_to_end(dbs: Any, timeout: float = 30) -> None:
    """The server notices the dead client and ends its sessions (rolling back)."""
    names = [
        psycopg.conninfo.conninfo_to_dict(u)["dbname"] for u in (dbs.source_url, dbs.warehouse_url)
    ]
    deadline = time.monotonic() + timeout
    with psycopg.connect(dbs.server_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            n = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s) "
                "AND pid <> pg_backend_pid()",
                (names,),
            ).fetchone()[0]
            if n == 0:
                return
            time.sleep(0.05)
    pytest.fail("the killed run's sessions did not end")


def test_sigkill_mid_copy_leaves_no_trace_and_the_next_run_completes(
    dbs: Any, tmp_path: Path
) -> None:
    with dbs.connect("source") as conn:
        conn.execute("CREATE SCHEMA src")
        conn.execute(
            "CREATE TABLE src.big (id bigint PRIMARY KEY, payload text, ts timestamptz NOT NULL)"
        )
        conn.execute(
            "INSERT INTO src.big SELECT g, 'row ' || g, timestamptz '2026-01-01' + "
            "g * interval '1 second' FROM generate_series(1, 1000) g"
        )
    first = _run(tmp_path, dbs)
    assert first["rows_inserted"] == 1000
    with dbs.connect("source") as conn:
        conn.execute(
            "INSERT INTO src.big SELECT g, 'row ' || g, timestamptz '2026-01-01' + "
            "g * interval '1 second' FROM generate_series(1001, 1000 + %s) g",
            (NEW_ROWS,),
        )
    before = _state(dbs)
    assert len(before["target"]) == 1000 and len(before["run_history"]) == 1

    proc = _start(tmp_path, dbs)
    copied = _wait_for_copy(dbs, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert 0 < copied < NEW_ROWS, "the kill did not land in the middle of the copy"

    _wait_for_sessions_to_end(dbs)
    assert _state(dbs) == before

    after = _run(tmp_path, dbs)
    assert after["status"] == "succeeded" and after["rows_inserted"] == NEW_ROWS
    state = _state(dbs)
    assert len(state["target"]) == 1000 + NEW_ROWS
    assert state["target"][:1000] == before["target"]
    with dbs.connect("source") as src, dbs.connect("warehouse") as wh:
        q = "SELECT count(*), sum(id), sum(hashtext(payload)), max(ts) FROM {}"
        assert (
            wh.execute(q.format("wh.big")).fetchone() == src.execute(q.format("src.big")).fetchone()
        )
    assert [w[3] for w in state["watermarks"]] == [str(1000 + NEW_ROWS)]
    assert [(h[1], h[4]) for h in state["run_history"]] == [
        ("big_sync", "succeeded"),
        ("big_sync", "succeeded"),
    ]
