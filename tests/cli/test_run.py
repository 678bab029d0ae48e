"""``flow list | run | run-due | history`` on real PostgreSQL, with ``--module`` imported
from the working directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ematix_flow import pipeline
from ematix_flow._cli.main import app
from ematix_flow._exitcodes import ExitCode
from tests.cli.tables import column_cells
from tests.cli.test_main import run_flows

pytestmark = pytest.mark.db

MODULE = """
from ematix_flow import pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text


class Cust(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "cust"
    id = Column(BigInt(), nullable=False, primary_key=True)
    name = Column(Text())


@pipeline.register(name="{name}", schedule="{schedule}", targets=[Cust],
                   connections=("warehouse",))
def cust_sync():
    return pipeline.sync(
        target=Cust,
        source=Source.postgres_query("oltp", "SELECT id, name FROM people"),
        target_connection="warehouse",
        mode="merge",
    )
"""


@pytest.fixture
def project(dbs: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A module file in the working directory, connections in the environment."""
    tag = uuid.uuid4().hex[:8]
    module = f"pipes_{tag}"
    name = f"cust_sync_{tag}"

    def write(schedule: str = "*/5 * * * *") -> None:
        Path(f"{module}.py").write_text(MODULE.format(name=name, schedule=schedule))

    write()
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", dbs.warehouse_url)
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLTP", dbs.source_url)
    import psycopg

    with psycopg.connect(dbs.source_url, autocommit=True) as c:
        c.execute("CREATE TABLE people (id bigint, name text)")
        c.execute("INSERT INTO people VALUES (1, 'a'), (2, 'b')")
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield type("P", (), {"module": module, "name": name, "dbs": dbs, "write": write})
    pipeline._unregister(name)
    sys.modules.pop(module, None)


def flow(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def wh_rows(dbs: Any, query: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dbs.warehouse_url, autocommit=True) as c:
        return c.execute(query).fetchall()


def test_list_shows_registered_pipelines(project: Any) -> None:
    result = flow("list", "--module", project.module, "--format", "json")
    assert result.exit_code == 0, result.output
    entry = next(e for e in json.loads(result.stdout) if e["name"] == project.name)
    assert entry["schedule"] == "*/5 * * * *"
    assert entry["targets"] == [
        {"table": "wh.cust", "mode": None, "keys": None, "connection": None}
    ]
    assert entry["connections"] == ["warehouse"]
    text = flow("list", "--module", project.module)
    assert project.name in text.stdout and "wh.cust" in text.stdout


def test_run_then_history(project: Any) -> None:
    result = flow("run", project.name, "--module", project.module)
    assert result.exit_code == 0, result.output
    assert "wh.cust" in result.stdout and "inserted 2" in result.stdout
    again = flow("run", project.name, "--module", project.module, "--format", "json")
    report = json.loads(again.stdout)
    assert report["ok"] and report["targets"][0]["rows_unchanged"] == 2
    hist = flow("history", project.name, "--module", project.module, "--format", "json")
    rows = json.loads(hist.stdout)
    assert [(r["status"], r["rows_inserted"]) for r in rows] == [("succeeded", 0), ("succeeded", 2)]
    limited = flow("history", project.name, "--module", project.module, "--limit", "1")
    assert limited.exit_code == 0 and limited.stdout.count("succeeded") == 1


def test_failed_run_exits_run_failed(project: Any) -> None:
    import psycopg

    with psycopg.connect(project.dbs.source_url, autocommit=True) as c:
        c.execute("DROP TABLE people")
    result = flow("run", project.name, "--module", project.module)
    assert result.exit_code == ExitCode.RUN_FAILED
    assert result.stdout.startswith("✗ wh.cust  merge  cross_db  failed")
    assert 'relation "people" does not exist' in result.stderr
    assert wh_rows(project.dbs, "SELECT status FROM ematix_flow.run_history") == [("failed",)]


def test_unknown_pipeline_and_broken_module(project: Any) -> None:
    missing = flow("run", "nope", "--module", project.module)
    assert missing.exit_code == ExitCode.CONFIG_ERROR and project.name in missing.output
    Path("broken_mod.py").write_text("import does_not_exist\n")
    broken = flow("list", "--module", "broken_mod")
    assert broken.exit_code == ExitCode.CONFIG_ERROR
    assert "cannot import module 'broken_mod'" in broken.output
    assert "does_not_exist" in broken.output
    sys.modules.pop("broken_mod", None)


def test_run_due_runs_once_per_slot_and_collapses_missed_slots(project: Any) -> None:
    first = flow("run-due", "--module", project.module, "--format", "json")
    assert first.exit_code == 0, first.output
    item = next(i for i in json.loads(first.stdout) if i["pipeline"] == project.name)
    assert item["due"] is True and item["reason"].startswith("no recorded run")
    second = flow("run-due", "--module", project.module, "--format", "json")
    item = next(i for i in json.loads(second.stdout) if i["pipeline"] == project.name)
    assert item["due"] is False and item["report"] is None
    # Pretend the last run was hours ago: many */5 slots were missed; one run catches up.
    wh_rows(
        project.dbs,
        "UPDATE ematix_flow.run_history SET started_at = started_at - interval '3 hours' "
        "RETURNING 1",
    )
    third = flow("run-due", "--module", project.module, "--format", "json")
    item = next(i for i in json.loads(third.stdout) if i["pipeline"] == project.name)
    assert item["due"] is True and item["report"]["ok"]
    fourth = flow("run-due", "--module", project.module, "--format", "json")
    item = next(i for i in json.loads(fourth.stdout) if i["pipeline"] == project.name)
    assert item["due"] is False
    assert wh_rows(project.dbs, "SELECT count(*) FROM ematix_flow.run_history") == [(2,)]


def test_invalid_cron_fails_at_registration(project: Any) -> None:
    project.write("every hour")
    result = flow("list", "--module", project.module)
    assert result.exit_code == ExitCode.CONFIG_ERROR
    assert "'every hour' is not a valid cron expression" in result.output


def test_flow_run_in_a_subprocess_imports_the_module_from_cwd(project: Any, tmp_path: Path) -> None:
    summary = tmp_path / "termination-log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["EMATIX_FLOW_TERMINATION_MESSAGE_PATH"] = str(summary)
    flow_bin = Path(sys.executable).with_name("flow")
    done = subprocess.run(
        [str(flow_bin), "run", project.name, "--module", project.module],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.getcwd(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "inserted 2" in done.stdout
    assert summary.exists() and project.name in summary.read_text()
    assert wh_rows(project.dbs, "SELECT id, name FROM wh.cust ORDER BY id") == [(1, "a"), (2, "b")]


def test_run_due_says_when_nothing_is_scheduled() -> None:
    Path("unscheduled.py").write_text(
        "from ematix_flow import pipeline\n\n\n"
        "@pipeline.register(name='by_hand')\n"
        "def by_hand():\n"
        "    pass\n"
    )
    (result,) = run_flows(("run-due", "--module", "unscheduled"))
    assert (result.returncode, result.stderr) == (ExitCode.OK, "")
    assert result.stdout.startswith(
        "No pipeline of module unscheduled has a schedule: nothing to run."
    )


# --- times, schedules, runs, numbers ----------------------------------------------------

FANOUT = """
from typing import Annotated

from ematix_flow import ematix, pk
from ematix_flow.types import BigInt, Text


@ematix.table(schema="analytics_warehouse_layer", name="customer_lifetime_value_snapshot_v2")
class Long:
    id: Annotated[BigInt, pk()]
    name: Text | None


@ematix.table(schema="wh", name="cust_copy")
class Short:
    id: Annotated[BigInt, pk()]
    name: Text | None


@ematix.pipeline(
    targets=[ematix.target(Long, mode="merge"), ematix.target(Short, mode="merge")],
    source_connection="oltp",
    schedule="0 6 * * *",
    timezone="Europe/Paris",
    name="{name}",
)
def fan(conn):
    return "SELECT id, name FROM people"
"""
LONG_TARGET = "analytics_warehouse_layer.customer_lifetime_value_snapshot_v2"


def test_history_counts_runs_in_utc_from_the_targets_connections_only(
    project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    Path(f"{project.module}.py").write_text(FANOUT.format(name=project.name))
    with psycopg.connect(project.dbs.source_url, autocommit=True) as c:
        c.execute("INSERT INTO people SELECT g, 'n' || g FROM generate_series(3, 1500) g")
    first = flow("run", project.name, "--module", project.module)
    assert first.exit_code == 0, first.output
    assert first.stdout.count("inserted 1,500") == 2  # both targets, one number format
    assert flow("run", project.name, "--module", project.module).exit_code == 0
    dry = flow("dry-run", project.name, "--module", project.module, "-v")
    assert dry.stdout.count("unchanged=1,500") == 2, dry.output
    assert "rows: inserted 0, updated 0, deleted 0, unchanged 1,500" in str(
        pipeline.dry_run(project.name)
    )
    # History and run-due read where the targets live; the source is never opened.
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLTP", "postgresql://nobody@127.0.0.1:9/unreachable")

    one = flow("history", project.name, "-m", project.module, "-n", "1", "--format", "json")
    assert one.exit_code == 0, one.output
    latest = json.loads(one.stdout)
    assert sorted(r["target"] for r in latest) == sorted([LONG_TARGET, "wh.cust_copy"])
    assert len({r["run_id"] for r in latest}) == 1 and latest[0]["rows_unchanged"] == 1500
    two = json.loads(
        flow("history", project.name, "-m", project.module, "-n", "2", "-f", "json").stdout
    )
    assert len(two) == 4 and len({r["run_id"] for r in two}) == 2
    assert two[2]["rows_inserted"] == 1500  # the older run comes second

    due = flow("run-due", "--module", project.module)
    assert due.exit_code == 0, due.output
    assert f"{project.name}: not due (last run " in due.stdout and " UTC; next slot " in due.stdout
    assert "Europe/Paris)" in due.stdout  # the next slot also on the schedule's clock
    listed = flow("list", "--module", project.module)
    assert "0 6 * * * (Europe/Paris)" in listed.stdout

    # What a person sees on an 80-column terminal: labelled times, full target names.
    (shown,) = run_flows(
        ("history", project.name, "-m", project.module), env={**os.environ, "COLUMNS": "80"}
    )
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"STARTED\s+\(UTC\)", shown.stdout) and "1,500" in shown.stdout
    assert "…" not in shown.stdout
    assert max(len(line) for line in shown.stdout.splitlines()) <= 80
    targets = column_cells(shown.stdout, "TARGET", "MODE")
    assert targets == (LONG_TARGET + "wh.cust_copy") * 2


def test_run_due_reads_the_schedule_in_its_time_zone(project: Any) -> None:
    import dataclasses

    from ematix_flow._cli.run import due

    assert flow("run", project.name, "--module", project.module).exit_code == 0
    wh_rows(
        project.dbs,
        "UPDATE ematix_flow.run_history SET started_at = '2026-03-20 04:30+00' RETURNING 1",
    )
    paris = dataclasses.replace(
        pipeline.get(project.name), schedule="0 6 * * *", timezone="Europe/Paris"
    )
    utc_ = dataclasses.replace(paris, timezone=None)

    def at(text: str) -> Any:
        from datetime import UTC, datetime

        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    # 06:00 in Paris is 05:00 UTC in March: due after it, whatever UTC's 06:00 says.
    decided = due(paris, at("2026-03-20 05:10"))
    assert decided.due, decided.reason
    assert "slot 2026-03-20 05:00 UTC (2026-03-20 06:00 Europe/Paris) came due" in decided.reason
    assert not due(paris, at("2026-03-20 04:50")).due
    assert not due(utc_, at("2026-03-20 05:10")).due


def test_a_failed_run_waits_for_the_next_slot_unless_retry_failed(project: Any) -> None:
    import psycopg

    project.write("0 0 1 1 *")  # yearly: no slot comes due while the test runs
    with psycopg.connect(project.dbs.source_url, autocommit=True) as c:
        c.execute("ALTER TABLE people RENAME TO people_gone")
    failed = flow("run-due", "--module", project.module, "--format", "json")
    assert failed.exit_code == ExitCode.RUN_FAILED, failed.output

    waits = flow("run-due", "--module", project.module)
    assert waits.exit_code == 0, waits.output
    assert "not due (the last run " in waits.stdout
    assert (
        " UTC failed; next slot " in waits.stdout and "(--retry-failed runs it now)" in waits.stdout
    )

    with psycopg.connect(project.dbs.source_url, autocommit=True) as c:
        c.execute("ALTER TABLE people_gone RENAME TO people")
    retried = flow("run-due", "--module", project.module, "--retry-failed", "-f", "json")
    assert retried.exit_code == 0, retried.output
    item = next(i for i in json.loads(retried.stdout) if i["pipeline"] == project.name)
    assert item["due"] and item["report"]["ok"] and "--retry-failed" in item["reason"]
    again = flow("run-due", "--module", project.module, "--retry-failed", "-f", "json")
    item = next(i for i in json.loads(again.stdout) if i["pipeline"] == project.name)
    assert item["due"] is False  # the last run succeeded: nothing to retry
    assert wh_rows(project.dbs, "SELECT id, name FROM wh.cust ORDER BY id") == [(1, "a"), (2, "b")]
