"""``flow list | run | run-due | history`` on real PostgreSQL, with ``--module`` imported
from the working directory."""

from __future__ import annotations

import json
import os
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
