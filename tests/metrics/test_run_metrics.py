"""Metrics of plain runs: ``flow run`` / ``flow run-due`` with ``--metrics-file`` (the
textfile collector's format, checked by ``promtool check metrics``) and ``--pushgateway``
(against a local HTTP server that records every push), on real PostgreSQL."""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from ematix_flow import pipeline
from ematix_flow._cli.main import app
from tests.metrics._prom import Samples, names, parse, promtool, value

pytestmark = pytest.mark.db

MODULE = """
from typing import Annotated
from ematix_flow import ematix, pk
from ematix_flow.types import BigInt, Text, TimestampTZ


@ematix.table(schema="wh", name="events_{tag}")
class Events:
    id: Annotated[BigInt, pk()]
    name: Text
    updated_at: TimestampTZ


@ematix.table(schema="wh", name="broken_{tag}")
class Broken:
    id: Annotated[BigInt, pk()]
    name: Text


@ematix.pipeline(target=Events, mode="merge", source_connection="oltp",
                 incremental_column="updated_at", schedule="* * * * *", name="events_{tag}")
def events(src, tgt):
    return "SELECT id, name, updated_at FROM app.events"


@ematix.pipeline(target=Broken, mode="merge", source_connection="oltp",
                 schedule="* * * * *", name="broken_{tag}")
def broken(src, tgt):
    return "SELECT id, name FROM app.{broken_table}"
"""


class Project:
    def __init__(self, tag: str, module: str, dbs: Any) -> None:
        self.tag, self.module, self.dbs = tag, module, dbs
        self.events, self.broken = f"events_{tag}", f"broken_{tag}"

    def write(self, *, broken_table: str) -> None:
        Path(f"{self.module}.py").write_text(MODULE.format(tag=self.tag, broken_table=broken_table))
        sys.modules.pop(self.module, None)
        for name in (self.events, self.broken):
            pipeline._unregister(name)


@pytest.fixture
def project(dbs: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    tag = uuid.uuid4().hex[:8]
    proj = Project(tag, f"metric_pipes_{tag}", dbs)
    with psycopg.connect(dbs.source_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS app")
        conn.execute(
            "CREATE TABLE app.events (id bigint PRIMARY KEY, name text, updated_at timestamptz)"
        )
        conn.execute(
            "INSERT INTO app.events VALUES (1, 'a', '2026-11-29 05:00:00+00'), "
            "(2, 'b', '2026-11-29 06:00:00+00')"
        )
        conn.execute("CREATE TABLE app.people (id bigint PRIMARY KEY, name text)")
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", dbs.warehouse_url)
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLTP", dbs.source_url)
    monkeypatch.setenv("EMATIX_FLOW_DSN", dbs.warehouse_url)
    monkeypatch.setattr(sys, "path", [str(Path.cwd()), *sys.path])
    proj.write(broken_table="no_such_table")
    yield proj
    for name in (proj.events, proj.broken):
        pipeline._unregister(name)
    sys.modules.pop(proj.module, None)


def flow(*args: str, code: int) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (args, result.output, result.exception)
    return result.output


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).astimezone(UTC).timestamp()


def _check_metrics(path: Path) -> Samples:
    checked = promtool("check", "metrics", stdin=path.read_text())
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr
    return parse(path.read_text())


def test_metrics_file_is_valid_and_carries_the_last_success(
    project: Project, tmp_path: Path
) -> None:
    prom = tmp_path / "textfile" / "flow.prom"
    m = ("--module", project.module, "--metrics-file", str(prom))
    before = datetime.now(UTC).timestamp()
    flow("run", project.events, *m, code=0)
    after = datetime.now(UTC).timestamp()
    samples = _check_metrics(prom)
    p = {"pipeline": project.events}
    success = value(samples, "ematix_flow_pipeline_last_success_timestamp_seconds", **p)
    assert success is not None and before <= success <= after
    assert value(samples, "ematix_flow_pipeline_last_run_timestamp_seconds", **p) == success
    duration = value(samples, "ematix_flow_pipeline_last_run_duration_seconds", **p)
    assert duration is not None and 0 < duration <= after - before
    assert value(samples, "ematix_flow_pipeline_last_run_success", **p) == 1
    assert value(samples, "ematix_flow_pipeline_consecutive_failures", **p) == 0
    target = f"wh.events_{project.tag}"
    rows = {"pipeline": project.events, "target": target}
    assert value(samples, "ematix_flow_target_last_run_rows", kind="inserted", **rows) == 2
    assert value(samples, "ematix_flow_target_rows_total", kind="inserted", **rows) == 2
    assert value(samples, "ematix_flow_target_watermark_timestamp_seconds", **rows) == _ts(
        "2026-11-29T06:00:00+00:00"
    )
    # Written atomically: nothing but the file itself (and the writers' lock) is left.
    assert {f.name for f in prom.parent.iterdir()} == {"flow.prom", ".flow.prom.lock"}

    # A failing pipeline in the same file; the first one's series stay as they were.
    flow("run", project.broken, *m, code=1)
    samples = _check_metrics(prom)
    b = {"pipeline": project.broken}
    assert value(samples, "ematix_flow_pipeline_last_run_success", **b) == 0
    assert value(samples, "ematix_flow_pipeline_consecutive_failures", **b) == 1
    assert "ematix_flow_pipeline_last_success_timestamp_seconds" not in names(samples, **b)
    assert value(samples, "ematix_flow_pipeline_last_success_timestamp_seconds", **p) == success

    # The next run of the first one changes nothing (same watermark), adds no rows, and
    # a failure after a success keeps that success.
    with psycopg.connect(project.dbs.source_url, autocommit=True) as conn:
        conn.execute("INSERT INTO app.events VALUES (3, 'c', '2026-11-29 07:30:00+00')")
    flow("run", project.events, *m, code=0)
    samples = _check_metrics(prom)
    assert value(samples, "ematix_flow_target_last_run_rows", kind="inserted", **rows) == 1
    assert value(samples, "ematix_flow_target_rows_total", kind="inserted", **rows) == 3
    assert value(samples, "ematix_flow_target_watermark_timestamp_seconds", **rows) == _ts(
        "2026-11-29T07:30:00+00:00"
    )
    latest = value(samples, "ematix_flow_pipeline_last_success_timestamp_seconds", **p)
    with psycopg.connect(project.dbs.source_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE app.events RENAME TO events_gone")
    flow("run", project.events, *m, code=1)
    samples = _check_metrics(prom)
    assert value(samples, "ematix_flow_pipeline_last_run_success", **p) == 0
    assert value(samples, "ematix_flow_pipeline_consecutive_failures", **p) == 1
    assert value(samples, "ematix_flow_pipeline_last_success_timestamp_seconds", **p) == latest
    assert value(samples, "ematix_flow_target_last_run_rows", kind="inserted", **rows) == 0
    assert value(samples, "ematix_flow_target_rows_total", kind="inserted", **rows) == 3


def test_run_due_writes_every_pipeline_it_ran_from_the_environment(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prom = tmp_path / "run-due.prom"
    monkeypatch.setenv("EMATIX_FLOW_METRICS_FILE", str(prom))
    flow("run-due", "--module", project.module, code=1)  # broken fails
    samples = _check_metrics(prom)
    assert value(samples, "ematix_flow_pipeline_last_run_success", pipeline=project.events) == 1
    assert value(samples, "ematix_flow_pipeline_last_run_success", pipeline=project.broken) == 0
    # Nothing is due a second time within the minute: the file keeps both as they were.
    text = prom.read_text()
    if datetime.now(UTC).second < 55:
        flow("run-due", "--module", project.module, code=0)
        assert prom.read_text() == text


def test_a_metrics_file_that_cannot_be_written_never_changes_the_outcome(
    project: Project, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    output = flow(
        "run", project.events, "--module", project.module,
        "--metrics-file", str(blocker / "flow.prom"), code=0,
    )  # fmt: skip
    assert "could not write the metrics file" in output


class _Gateway(BaseHTTPRequestHandler):
    """Records each request (method, path, headers, body) and answers 200 (or 500)."""

    pushes: list[dict[str, Any]]
    status = 200

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.pushes.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers),
                "body": self.rfile.read(length).decode("utf-8"),
            }
        )
        self.send_response(self.status)
        self.end_headers()

    do_POST = do_PUT = do_DELETE = _record

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, type[_Gateway]]]:
    handler = type("Gateway", (_Gateway,), {"pushes": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_pushgateway_gets_a_push_add_per_pipeline(
    project: Project, gateway: tuple[str, type[_Gateway]]
) -> None:
    url, recorded = gateway
    flow("run", project.events, "--module", project.module, "--pushgateway", url, code=0)
    flow("run", project.broken, "--module", project.module, "--pushgateway", url, code=1)
    first, second = recorded.pushes
    # POST is push-add: metrics a push leaves out keep their values in the gateway.
    assert first["method"] == second["method"] == "POST"
    assert first["path"] == f"/metrics/job/ematix_flow/pipeline/{project.events}"
    assert second["path"] == f"/metrics/job/ematix_flow/pipeline/{project.broken}"
    ok, failed = parse(first["body"]), parse(second["body"])
    assert value(ok, "ematix_flow_pipeline_last_run_success") == 1
    assert value(ok, "ematix_flow_pipeline_last_success_timestamp_seconds") is not None
    target = f"wh.events_{project.tag}"
    assert value(ok, "ematix_flow_target_last_run_rows", target=target, kind="inserted") == 2
    # A failed run pushes no last success: the gateway keeps the previous one.
    assert value(failed, "ematix_flow_pipeline_last_run_success") == 0
    assert "ematix_flow_pipeline_last_success_timestamp_seconds" not in names(failed)
    # A push knows one run: no streak, no running totals.
    for body in (ok, failed):
        assert not names(body) & {
            "ematix_flow_pipeline_consecutive_failures",
            "ematix_flow_target_rows_total",
        }
    for push in (first, second):
        checked = promtool("check", "metrics", stdin=push["body"])
        assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout


def test_pushgateway_credentials_become_basic_auth_and_are_never_printed(
    project: Project, gateway: tuple[str, type[_Gateway]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, recorded = gateway
    secret = "Gw-S3cret-" + uuid.uuid4().hex[:6]
    monkeypatch.setenv("EMATIX_FLOW_PUSHGATEWAY", url.replace("://", f"://ops:{secret}@"))
    flow("run", project.events, "--module", project.module, code=0)
    (push,) = recorded.pushes
    assert push["headers"]["Authorization"].startswith("Basic ")
    # The gateway refuses: the run still succeeds, and the message hides the password.
    recorded.status = 500
    output = flow("run", project.events, "--module", project.module, code=0)
    assert "could not push the metrics" in output
    assert secret not in output
    assert os.environ["EMATIX_FLOW_PUSHGATEWAY"].split("@")[1] in output
