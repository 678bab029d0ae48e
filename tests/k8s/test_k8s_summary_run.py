"""The termination-message summary of real runs (a real RunReport on real databases)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ematix_flow import _core, pipeline
from ematix_flow._k8s import model
from ematix_flow._k8s.summary import (
    MAX_BYTES,
    TERMINATION_MESSAGE_ENV,
    parse_termination_summary,
    status_targets,
    write_termination_summary,
)
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text

pytestmark = [pytest.mark.db, pytest.mark.k8s]

PASSWORD = "S3cret-In-Dsn"


class Customer(ManagedTable):
    __schema__ = "warehouse"
    __tablename__ = "k8s_summary_customer"

    customer_id = Column(BigInt(), nullable=False, primary_key=True)
    name = Column(Text())


def _register(names: list[str], name: str, body: Any) -> None:
    pipeline.register(name=name, schedule="@hourly", connections=("warehouse",))(body)
    names.append(name)


def test_successful_run_summary(dbs: Any, names: list[str], tmp_path: Path, monkeypatch) -> None:
    with dbs.connect("source") as conn:
        conn.execute(
            "CREATE TABLE users (id bigint PRIMARY KEY, name text);"
            "INSERT INTO users VALUES (1, 'a'), (2, 'b'), (3, NULL)"
        )

    def body() -> Any:
        return pipeline.sync(
            target=Customer,
            source=Source.postgres_query(
                _core.connect(dbs.source_url), "SELECT id AS customer_id, name FROM users"
            ),
            target_connection=_core.connect(dbs.warehouse_url),
            mode="merge",
        )

    _register(names, "k8s_summary_ok", body)
    report = pipeline.run("k8s_summary_ok")
    assert report.ok, report
    path = tmp_path / "termination-log"
    monkeypatch.setenv(TERMINATION_MESSAGE_ENV, str(path))
    assert write_termination_summary(report) == path
    summary = parse_termination_summary(path.read_text())
    assert summary["ok"] is True
    assert summary["pipeline"] == "k8s_summary_ok"
    assert summary["totals"]["rows_inserted"] == 3
    (target,) = summary["targets"]
    assert target["target"] == "warehouse.k8s_summary_customer"
    assert target["status"] == "succeeded"
    assert target["mode"] == "merge"
    assert target["duration_s"] >= 0
    last_run = model.LastRun.from_k8s({"phase": "Succeeded", "targets": status_targets(summary)})
    assert last_run.targets[0].rows_inserted == 3


def test_failed_run_summary_has_the_error_and_no_password(
    dbs: Any, names: list[str], tmp_path: Path
) -> None:
    unreachable = f"postgresql://etl:{PASSWORD}@127.0.0.1:1/warehouse?connect_timeout=2"

    def body() -> Any:
        return pipeline.sync(
            target=Customer,
            source=Source.postgres_query(_core.connect(dbs.source_url), "SELECT 1 AS customer_id"),
            target_connection=_core.connect(unreachable),
            mode="merge",
        )

    _register(names, "k8s_summary_failed", body)
    report = pipeline.run("k8s_summary_failed")
    assert not report.ok
    path = tmp_path / "msg"
    write_termination_summary(report, path=path)
    text = path.read_text()
    assert len(text.encode()) <= MAX_BYTES
    assert PASSWORD not in text
    summary = parse_termination_summary(text)
    assert summary["ok"] is False
    errors = [t.get("error") for t in summary["targets"]] + [summary.get("error")]
    assert any(errors), summary
