"""Stage once, fan out: a pipeline with several targets reads its source once per run,
and every target of the run sees that one snapshot of the source.

A writer changes the source while the run is between its targets' transactions (from
the progress callback, which the run calls before each step): every target must still
reflect the source as it was when the run read it. The halting and
``continue_on_failure`` rules and one history row per target per fire still hold, and
a SIGKILL in the middle of a fan-out leaves each target old or new, never mixed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Annotated, Any

import psycopg
import pytest

from ematix_flow import ematix, pipeline, pk
from ematix_flow.config import connect
from ematix_flow.source import Source
from ematix_flow.types import BigInt, Text

pytestmark = pytest.mark.db


@ematix.table(schema="fan")
class ByKey:
    id: Annotated[BigInt, pk()]
    v: Text | None


@ematix.table(schema="fan")
class History:
    id: Annotated[BigInt, pk()]
    v: Text | None


@ematix.table(schema="fan")
class Log:
    id: BigInt
    v: Text | None


SOURCE = "CREATE TABLE items (id bigint PRIMARY KEY, v text); " + (
    "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 100) g"
)


def _declare(source_connection: str, log_connection: str = "warehouse", **kw: Any) -> Any:
    @ematix.pipeline(
        targets=[
            ematix.target(ByKey, mode="merge"),
            ematix.target(History, mode="scd2"),
            ematix.target(Log, mode="append", target_connection=log_connection),
        ],
        source_connection=source_connection,
        **kw,
    )
    def fan_sync(conn: Any) -> str:
        return "SELECT id, v FROM items"

    return fan_sync


def _writer_between_targets(url: str) -> Any:
    """A progress callback that changes the source once the first target is done."""
    done: list[str] = []

    def progress(text: Any) -> None:
        if str(text).startswith("fan.history:") and not done:
            with psycopg.connect(url, autocommit=True) as c:
                c.execute("UPDATE items SET v = 'changed' WHERE id <= 10")
                c.execute("INSERT INTO items VALUES (1000, 'late')")
                c.execute("DELETE FROM items WHERE id = 100")
            done.append(str(text))

    progress.done = done  # type: ignore[attr-defined]
    return progress


def _state(named: Any, which: str, table: str) -> list[tuple[Any, ...]]:
    return named.rows(which, f"SELECT id, v FROM fan.{table} ORDER BY id")


EXPECTED = [(i, f"v{i}") for i in range(1, 101)]


@pytest.mark.parametrize(
    ("source", "log"),
    [("oltp", "warehouse"), ("warehouse", "warehouse"), ("oltp", "archive")],
    ids=["cross-db", "same-db", "two-target-connections"],
)
def test_every_target_sees_one_snapshot(named: Any, source: str, log: str) -> None:
    if log == "archive":
        named.add("archive")
    named.sql(source, SOURCE)
    _declare(source, log)
    progress = _writer_between_targets(named.urls[source])

    report = pipeline.run("fan_sync", progress=progress)

    assert report.ok, report
    assert progress.done, "the writer ran between the targets"
    assert _state(named, "warehouse", "by_key") == EXPECTED
    assert _state(named, "warehouse", "history") == EXPECTED
    assert _state(named, log, "log") == EXPECTED
    for result in report.results:
        assert result.plan is not None
        assert result.plan.decision("source_read").value == "shared stage"
    # The next run reads the source as it is now.
    again = pipeline.run("fan_sync")
    assert again.ok, again
    # (merge keeps id 100, deleted from the source: no handle_deletes)
    now = [(i, "changed" if i <= 10 else f"v{i}") for i in range(1, 101)] + [(1000, "late")]
    assert _state(named, "warehouse", "by_key") == now


def test_preview_shows_the_shared_read_and_dry_run_leaves_nothing(named: Any) -> None:
    named.sql("oltp", SOURCE)
    _declare("oltp")
    preview = pipeline.preview("fan_sync")
    assert [r.plan.decision("source_read").value for r in preview.results] == ["shared stage"] * 3
    assert "3 targets read one source" in preview.results[0].plan.decision("source_read").reason
    dry = pipeline.dry_run("fan_sync")
    assert dry.ok, dry
    assert [r.rows_inserted for r in dry.results] == [100, 100, 100]
    assert not named.exists("warehouse", "fan.by_key")


@pytest.mark.parametrize("keep_going", [False, True])
def test_halting_and_history_rows_hold(named: Any, keep_going: bool) -> None:
    named.sql("oltp", SOURCE)
    # History's current-version index exists already on another key: its load fails.
    named.sql(
        "warehouse",
        "CREATE SCHEMA fan",
        "CREATE TABLE fan.history (id bigint NOT NULL, v text, valid_from timestamptz NOT "
        "NULL, valid_to timestamptz, is_current boolean NOT NULL, row_hash text NOT NULL, "
        "PRIMARY KEY (id, valid_from))",
        "CREATE UNIQUE INDEX ON fan.history (is_current)",
    )
    _declare("oltp", continue_on_failure=keep_going)

    report = pipeline.run("fan_sync")

    statuses = [r.status for r in report.results]
    assert statuses == ["succeeded", "failed", "succeeded" if keep_going else "not_run"]
    history = named.history("warehouse")
    assert [h[1:] for h in history] == [
        ("fan.by_key", "succeeded"),
        ("fan.history", "failed"),
        ("fan.log", "succeeded" if keep_going else "not_run"),
    ]
    assert _state(named, "warehouse", "by_key") == EXPECTED


def test_incremental_targets_read_from_the_lowest_watermark(named: Any) -> None:
    named.sql("oltp", SOURCE)

    @ematix.pipeline(
        targets=[
            ematix.target(ByKey, mode="merge", incremental_column="id"),
            ematix.target(Log, mode="append", incremental_column="id"),
        ],
        source_connection="oltp",
    )
    def inc_sync(conn: Any) -> str:
        return "SELECT id, v FROM items"

    assert inc_sync().ok
    named.sql("oltp", "INSERT INTO items SELECT g, 'v' || g FROM generate_series(101, 150) g")
    # One target is taken back to id 20: the shared read must start there for it.
    inc_sync.reset_state(target="fan.by_key", to="20")
    named.sql("warehouse", "DELETE FROM fan.by_key WHERE id > 20")
    report = inc_sync()
    assert report.ok, report
    assert _state(named, "warehouse", "by_key") == [(i, f"v{i}") for i in range(1, 151)]
    log = named.rows("warehouse", "SELECT id, count(*) FROM fan.log GROUP BY id ORDER BY id")
    # rows at the watermark (100) are skipped, not appended twice
    assert log == [(i, 1) for i in range(1, 151)]


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from typing import Annotated
    from ematix_flow import ematix, pipeline, pk
    from ematix_flow.types import BigInt, Text

    @ematix.table(schema="fan")
    class ByKey:
        id: Annotated[BigInt, pk()]
        v: Text | None

    @ematix.table(schema="fan")
    class Log:
        id: BigInt
        v: Text | None

    @ematix.pipeline(
        targets=[ematix.target(ByKey, mode="merge"), ematix.target(Log, mode="append")],
        source_connection="oltp",
    )
    def kill_sync(conn):
        return "SELECT id, v FROM items"

    def progress(text):
        if str(text).startswith("fan.log:"):
            print("SECOND", flush=True)

    pipeline.run("kill_sync", progress=progress)
    """
)


def test_sigkill_during_a_fan_out_leaves_each_target_old_or_new(named: Any, tmp_path: Path) -> None:
    named.sql(
        "oltp",
        "CREATE TABLE items (id bigint PRIMARY KEY, v text)",
        "INSERT INTO items SELECT g, 'old' FROM generate_series(1, 1000) g",
    )
    script = tmp_path / "kill_sync.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ)
    assert subprocess.run([sys.executable, str(script)], env=env, check=False).returncode == 0
    old_key, old_log = _state(named, "warehouse", "by_key"), _state(named, "warehouse", "log")
    named.sql("oltp", "UPDATE items SET v = 'new'", "INSERT INTO items VALUES (5000, 'new')")
    # The second target's load runs while the first has committed: kill it there.
    named.sql("warehouse", "ALTER TABLE fan.log SET (autovacuum_enabled = false)")
    with psycopg.connect(named.urls["warehouse"], autocommit=True) as blocker:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE fan.log IN ACCESS EXCLUSIVE MODE")
        run = subprocess.Popen(
            [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert run.stdout is not None
        assert run.stdout.readline().strip() == "SECOND"
        time.sleep(0.3)  # the second target waits for the lock, inside its transaction
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        blocker.execute("ROLLBACK")
    new_key = _state(named, "warehouse", "by_key")
    assert new_key in (old_key, [(i, "new") for i in range(1, 1001)] + [(5000, "new")])
    assert new_key != old_key, "the first target committed before the kill"
    assert _state(named, "warehouse", "log") == old_log


def test_a_failing_source_fails_the_first_target_with_its_own_message(named: Any) -> None:
    _declare("oltp")  # no table "items" in the source database
    report = pipeline.run("fan_sync")
    assert [r.status for r in report.results] == ["failed", "not_run", "not_run"]
    assert 'relation "items" does not exist' in (report.results[0].error or "")


def test_the_verbose_preview_says_the_source_is_read_once(named: Any) -> None:
    from rich.console import Console

    from ematix_flow._preview.document import document
    from ematix_flow._preview.text import render

    named.sql("oltp", SOURCE)
    _declare("oltp")
    console = Console(record=True, width=200, color_system=None)
    render(document(pipeline.preview("fan_sync")), console, verbose_=True)
    text = console.export_text()
    assert len(re.findall(r"source read +shared stage  3 targets read one source", text)) == 3
    assert len(re.findall(r"load +direct ", text)) == 3, text
    # the source is the user's query; the statements read the stage it fills
    assert "SELECT id, v FROM items" in text and 'FROM pg_temp."ematix_flow_shared"' in text


def test_a_run_does_not_write_its_stage_over_a_newer_run(named: Any) -> None:
    # A second run of the pipeline starts and commits every target while the first is
    # between its targets: the first one's stage is older than what was committed.
    named.sql("oltp", SOURCE)
    _declare("oltp")
    assert pipeline.run("fan_sync").ok
    newer: list[Any] = []

    def progress(event: Any) -> None:
        if str(event) == "fan.history: started" and not newer:
            named.sql("oltp", "UPDATE items SET v = 'changed' WHERE id <= 10")
            newer.append(pipeline.run("fan_sync"))

    report = pipeline.run("fan_sync", progress=progress)

    assert newer and newer[0].ok, newer
    assert [r.status for r in report.results] == ["succeeded", "skipped", "skipped"]
    assert "a later run of pipeline fan_sync wrote target fan.history" in (
        report.results[1].error or ""
    )
    assert named.rows(
        "warehouse", "SELECT v, is_current FROM fan.history WHERE id = 1 ORDER BY valid_from"
    ) == [("v1", False), ("changed", True)]


def test_a_function_running_its_own_failing_sync_runs_once(named: Any) -> None:
    calls: list[int] = []

    @ematix.pipeline(
        targets=[ematix.target(ByKey, mode="merge"), ematix.target(Log, mode="append")],
        source_connection="oltp",
    )
    def own_sync(conn: Any) -> Any:
        calls.append(1)  # no table "items" in the source database: its sync fails
        return pipeline.sync(
            target=ByKey,
            source=Source.postgres_query(conn, "SELECT id, v FROM items"),
            target_connection=connect("warehouse"),
            mode="merge",
        )

    report = pipeline.run("own_sync")

    assert len(calls) == 1
    assert [(r.target, r.status) for r in report.results] == [
        ("fan.by_key", "failed"),
        ("fan.log", "not_run"),
    ]
    assert [h[1:] for h in named.history()] == [
        ("fan.by_key", "failed"),
        ("fan.log", "not_run"),
    ]
