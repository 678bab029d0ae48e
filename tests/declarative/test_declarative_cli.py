"""A module of decorated pipelines, seen by ``flow list / run / run-due / history``
exactly like imperative ones: ``--module`` imports it from the working directory."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ematix_flow import pipeline
from ematix_flow._cli.main import app

pytestmark = pytest.mark.db

MODULE = '''
from typing import Annotated

from ematix_flow import ematix, pk
from ematix_flow.types import BigInt, Date, Numeric


@ematix.table(schema="features")
class DailySpend:
    user_id: Annotated[BigInt, pk()]
    day: Annotated[Date, pk()]
    spend: Numeric[12, 2] | None


@ematix.table(schema="features")
class SpendLog:
    user_id: BigInt
    day: Date
    spend: Numeric[12, 2] | None


@ematix.pipeline(
    targets=[
        ematix.target(DailySpend, mode="scd2"),
        ematix.target(SpendLog, mode="append"),
    ],
    source_connection="oltp",
    schedule="*/5 * * * *",
    name="{name}",
)
def sync_spend(src_conn, tgt_conn):
    return """
        SELECT user_id, ordered_at::date AS day, sum(amount) AS spend
        FROM app.orders GROUP BY 1, 2
    """
'''


@pytest.fixture
def project(named: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    tag = uuid.uuid4().hex[:8]
    module, name = f"decorated_{tag}", f"sync_spend_{tag}"
    Path(f"{module}.py").write_text(MODULE.replace("{name}", name), encoding="utf-8")
    named.sql(
        "oltp",
        "CREATE SCHEMA app",
        "CREATE TABLE app.orders (user_id bigint, ordered_at timestamptz, amount numeric)",
        "INSERT INTO app.orders VALUES (1, '2026-01-01 08:00+00', 2.5), "
        "(1, '2026-01-01 09:00+00', 1.5), (2, '2026-01-02 10:00+00', 4)",
    )
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield type("Project", (), {"module": module, "name": name})
    pipeline._unregister(name)
    sys.modules.pop(module, None)


def flow(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_flow_list_run_history_and_run_due(project: Any, named: Any) -> None:
    listed = flow("list", "--module", project.module, "--format", "json")
    assert listed.exit_code == 0, listed.output
    entry = next(e for e in json.loads(listed.stdout) if e["name"] == project.name)
    assert entry["schedule"] == "*/5 * * * *"
    assert entry["function"] == "sync_spend"
    assert entry["connections"] == ["oltp", "warehouse"]
    assert entry["targets"] == [
        {
            "table": "features.daily_spend",
            "mode": "scd2",
            "keys": ["user_id", "day"],
            "connection": "warehouse",
        },
        {"table": "features.spend_log", "mode": "append", "keys": None, "connection": "warehouse"},
    ]

    due = flow("run-due", "--module", project.module, "--format", "json")
    assert due.exit_code == 0, due.output
    item = next(i for i in json.loads(due.stdout) if i["pipeline"] == project.name)
    assert item["due"] is True and item["report"]["ok"]

    ran = flow("run", project.name, "--module", project.module, "--format", "json")
    assert ran.exit_code == 0, ran.output
    report = json.loads(ran.stdout)
    assert [(t["target"], t["status"]) for t in report["targets"]] == [
        ("features.daily_spend", "succeeded"),
        ("features.spend_log", "succeeded"),
    ]

    history = flow("history", project.name, "--module", project.module, "--format", "json")
    assert history.exit_code == 0, history.output
    rows = [(r["target"], r["status"]) for r in json.loads(history.stdout)]
    assert sorted(rows) == sorted(
        [("features.daily_spend", "succeeded"), ("features.spend_log", "succeeded")] * 2
    )
    assert named.rows(
        "warehouse", "SELECT user_id, day::text, spend::text FROM features.daily_spend ORDER BY 1"
    ) == [(1, "2026-01-01", "4.00"), (2, "2026-01-02", "4.00")]
    assert named.rows("warehouse", "SELECT count(*) FROM features.spend_log") == [(4,)]
