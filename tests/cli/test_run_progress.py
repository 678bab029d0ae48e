"""What ``flow run``, ``run-due`` and ``backfill`` say while they run, and Ctrl-C.

The real ``flow`` process, piped as under cron or in a pod: a line when each target
starts and ends (JSON lines with ``--log-format json`` / ``EMATIX_FLOW_LOG_FORMAT``) on
stderr, the result alone on stdout. The live display of a terminal is drawn in-process
on a recording terminal console. SIGINT sent while a target's transaction is open:
that target rolls back and is recorded ``interrupted``, the earlier one stays committed,
one line says so, exit code 130.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ematix_flow._exitcodes import ExitCode
from tests.cli.test_main import FLOW_SCRIPT, run_flow

pytestmark = pytest.mark.db

# Two targets: ``fast`` reads the warehouse itself (same-DB), ``slow`` streams from the
# oltp database (cross-DB), after a pause of PAUSE seconds when that is set.
MODULE = """
import os

from ematix_flow import pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text


class Fast(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "fast"
    id = Column(BigInt(), nullable=False, primary_key=True)
    name = Column(Text())


class Slow(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "slow"
    id = Column(BigInt(), nullable=False, primary_key=True)
    name = Column(Text())


@pipeline.register(name="{name}", schedule="0 0 1 1 *", targets=[Fast, Slow],
                   connections=("warehouse",))
def two_targets():
    pause = float(os.environ.get("PAUSE", "0"))
    for table, conn, sql in (
        (Fast, "warehouse", "SELECT id, name FROM src.people"),
        (Slow, "oltp", "SELECT id, name FROM people CROSS JOIN (SELECT pg_sleep(%s)) AS p"
         % pause),
    ):
        pipeline.sync(target=table, source=Source.postgres_query(conn, sql),
                      target_connection="warehouse", mode="merge", incremental_column="id")
"""

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "


@pytest.fixture
def project(dbs: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    tag = uuid.uuid4().hex[:8]
    module, name = f"progress_{tag}", f"two_{tag}"
    Path(f"{module}.py").write_text(MODULE.format(name=name))
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", dbs.warehouse_url)
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLTP", dbs.source_url)
    with dbs.connect("source") as c:
        c.execute("CREATE TABLE people (id bigint, name text)")
        c.execute("INSERT INTO people VALUES (1, 'a'), (2, 'b')")
    with dbs.connect("warehouse") as c:
        c.execute("CREATE SCHEMA src")
        c.execute("CREATE SCHEMA wh")
        c.execute("CREATE TABLE src.people (id bigint, name text)")
        c.execute("INSERT INTO src.people VALUES (1, 'a'), (2, 'b')")
    return type("P", (), {"module": module, "name": name, "dbs": dbs})


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines()]  # every line is JSON


def _events(lines: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in lines if e["event"] == event]


def test_off_a_terminal_each_target_says_when_it_starts_and_ends(project: Any) -> None:
    # a column the class does not declare: the run warns (on stderr too) and goes on
    with project.dbs.connect("warehouse") as c:
        c.execute("CREATE TABLE wh.fast (id bigint PRIMARY KEY, name text, legacy text)")
    due = run_flow("run-due", "-m", project.module, "--format", "json", "--log-format", "json")
    assert due.returncode == 0, due.stderr
    assert json.loads(due.stdout)[0]["report"]["ok"]  # stdout: the result alone
    lines = _json_lines(due.stderr)
    assert [e["target"] for e in _events(lines, "target_started")] == ["wh.fast", "wh.slow"]
    started = {e["target"]: e for e in _events(lines, "target_started")}
    assert started["wh.fast"]["path"] == "same_db" and started["wh.slow"]["path"] == "cross_db"
    finished = {e["target"]: e for e in _events(lines, "target_finished")}
    for target in ("wh.fast", "wh.slow"):
        e = finished[target]
        assert (e["pipeline"], e["status"], e["rows_inserted"]) == (project.name, "succeeded", 2)
        assert e["duration_s"] >= 0 and e["error"] is None and re.match(STAMP, e["time"] + " ")
    (warning,) = _events(lines, "warning")
    assert "column legacy (text NULL) exists but is not declared" in warning["message"]

    again = run_flow("run", project.name, "-m", project.module)
    assert again.returncode == 0, again.stderr
    assert "wh.slow" in again.stdout and "started" not in again.stdout
    text = again.stderr.splitlines()
    assert all(re.match(STAMP, line) for line in text), text
    bodies = [line[21:] for line in text]
    assert bodies[:2] == [
        f"{project.name} wh.fast: started (merge, same_db)",
        "warning: table wh.fast: column legacy (text NULL) exists but is not declared; it is "
        "left alone (new rows get NULL in it). Declare it to sync it, or drop it by hand if "
        "it is unused.",
    ]
    assert re.fullmatch(
        rf"{project.name} wh\.fast: succeeded in \d+\.\d\ds: inserted 0, updated 0, "
        r"deleted 0, unchanged 1",  # the watermark re-reads id 2 only
        bodies[2],
    )
    assert bodies[3] == f"{project.name} wh.slow: started (merge, cross_db)"
    assert bodies[4].startswith(f"{project.name} wh.slow: succeeded in ") and len(bodies) == 5

    backfill = run_flow(
        "backfill", project.name, "-m", project.module, "--from", "0", "--to", "4",
        "--step", "2", EMATIX_FLOW_LOG_FORMAT="json",
    )  # fmt: skip
    assert backfill.returncode == 0, backfill.stderr
    lines = _json_lines(backfill.stderr)
    assert [e["window"] for e in _events(lines, "window")] == ["[0, 2)", "[2, 4)"]
    done = _events(lines, "target_finished")
    assert [(e["target"], e["window"], e["status"]) for e in done] == [
        ("wh.fast", ["0", "2"], "succeeded"),
        ("wh.slow", ["0", "2"], "succeeded"),
        ("wh.fast", ["2", "4"], "succeeded"),
        ("wh.slow", ["2", "4"], "succeeded"),
    ]


def test_on_a_terminal_the_copy_shows_rows_rate_and_elapsed_time() -> None:
    from rich.console import Console

    from ematix_flow._cli._progress import RunDisplay
    from ematix_flow._engine import TargetResult
    from ematix_flow.pipeline import Progress

    terminal = Console(file=io.StringIO(), force_terminal=True, width=120, record=True)
    display = RunDisplay(console_=terminal)
    assert display.live
    started = Progress("started", "p", "wh.big", "merge", text="cross_db")
    with display.showing():
        display(started)
        display(Progress("step", "p", "wh.big", "merge", text="copy source → stage"))
        for rows in (40_000, 80_000, 120_000):
            time.sleep(0.01)  # rich's rate needs time between two counts
            display(Progress("rows", "p", "wh.big", "merge", rows=rows))
        assert display._bars is not None
        display._bars.refresh()
        drawn = terminal.export_text()
        result = TargetResult("p", "wh.big", "merge", "succeeded", duration_s=1.0)
        display(Progress("finished", "p", "wh.big", "merge", result=result))
    line = next(row for row in drawn.splitlines() if "wh.big" in row)
    assert "p wh.big" in line and "copy source → stage" in line
    assert re.search(r"120,000 rows  [\d,]+ rows/s\s+\d:\d\d:\d\d", line), line
    assert display.committed == ["wh.big"]


def test_the_copy_reports_the_rows_streamed_so_far(dbs: Any) -> None:
    from ematix_flow._engine.copy import pipe

    told: list[int] = []
    with dbs.connect("source") as src, dbs.connect("warehouse") as wh, wh.transaction():
        wh.execute("CREATE TEMP TABLE stage (n int)")
        n = pipe(
            src,
            wh,
            "COPY (SELECT g FROM generate_series(1, 1000) g) TO STDOUT (FORMAT BINARY)",
            "COPY stage (n) FROM STDIN (FORMAT BINARY)",
            on_rows=told.append,
            every_s=0,
        )
    assert n == 1000
    assert told == list(range(63, 1000, 64))  # every 64 messages: the header rides on row 1


def _wait_for_sleeping_copy(dbs: Any, proc: subprocess.Popen[str]) -> None:
    """Until the run's COPY on the source sleeps: the slow target's transaction is open
    (its stage was created in it) and the fast target has committed."""
    deadline = time.monotonic() + 60
    with dbs.connect("source") as conn:
        while time.monotonic() < deadline:
            found = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'active' AND query LIKE 'COPY%pg_sleep%'"
            ).fetchone()[0]
            if found:
                return
            if proc.poll() is not None:
                pytest.fail(f"the run ended before its copy started: {proc.communicate()}")
            time.sleep(0.02)
    pytest.fail("the run never started its copy")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_rolls_back_the_running_target_and_says_what_committed(project: Any) -> None:
    with project.dbs.connect("warehouse") as c:
        c.execute("CREATE TABLE wh.slow (id bigint PRIMARY KEY, name text)")
        c.execute("INSERT INTO wh.slow VALUES (1, 'old')")
    metrics = Path("run.prom")
    proc = subprocess.Popen(
        [str(FLOW_SCRIPT), "run", project.name, "-m", project.module, "--metrics-file", metrics],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PAUSE": "60"},
        # Ctrl-C as a terminal sends it: SIGINT at its default, whatever this process
        # inherited (a job started in the background by a shell ignores SIGINT, and so
        # would the child, which then sleeps through it)
        preexec_fn=_default_sigint,
    )
    _wait_for_sleeping_copy(project.dbs, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED == 130, err
    assert err.splitlines()[-1] == (
        "interrupted: target wh.slow rolled back, nothing committed; committed before the "
        "interrupt: wh.fast"
    )
    assert out == "" and not metrics.exists()  # no report, no metrics: it did not finish
    with project.dbs.connect("warehouse") as c:
        assert c.execute("SELECT * FROM wh.slow").fetchall() == [(1, "old")]
        assert c.execute("SELECT count(*) FROM wh.fast").fetchone() == (2,)
        history = c.execute(
            "SELECT target, status, rows_inserted, error FROM ematix_flow.run_history ORDER BY id"
        ).fetchall()
        assert c.execute(
            "SELECT count(*) FROM ematix_flow.watermarks WHERE target = 'wh.slow'"
        ).fetchone() == (0,)
    assert history == [
        ("wh.fast", "succeeded", 2, None),
        (
            "wh.slow",
            "interrupted",
            None,
            "interrupted: target wh.slow rolled back, nothing committed",
        ),
    ]


def test_an_interrupt_in_the_pipe_does_not_wait_for_the_source_query(
    dbs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C that lands outside the source's read (here: in the progress callback)
    while the source query still runs, and whose cancel does not take (as one that
    reaches the server as the query starts): the pipe ends now, not with the query."""
    from ematix_flow._engine.copy import pipe

    def interrupt(rows: int) -> None:
        raise KeyboardInterrupt

    with dbs.connect("source") as src, dbs.connect("warehouse") as wh, wh.transaction():
        monkeypatch.setattr(type(src), "cancel_safe", lambda self, **kw: None)
        pid = src.info.backend_pid
        wh.execute("CREATE TEMP TABLE stage (n int)")
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            pipe(
                src,
                wh,
                # rows first (flushed past 8 kB), then a query that sleeps at its end
                "COPY (SELECT g FROM generate_series(1, 5000) g "
                "WHERE g < 5000 OR pg_sleep(30) IS NOT NULL) TO STDOUT (FORMAT BINARY)",
                "COPY stage (n) FROM STDIN (FORMAT BINARY)",
                on_rows=interrupt,
                every_s=0,
            )
        # not a timing of the engine: whether it waited for a query that sleeps 30 s
        # (without the fix it returns after 30 s, with its connection still open)
        gave_up_after = time.monotonic() - started
        assert src.closed
        with dbs.connect("source") as probe:
            probe.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert gave_up_after < 20, gave_up_after
