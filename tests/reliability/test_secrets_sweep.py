"""Secrets sweep: with DSNs carrying distinctive passwords (one plain, one with URL
metacharacters percent-encoded), run every ``flow`` command, in text and JSON, on
succeeding, failing and unreachable pipelines; read every run-history row, the
termination summaries, the metrics file of those runs, and the operator's status, Events
and scraped /metrics after it read those summaries back. No password — raw,
percent-encoded, or any 6-character piece of it — appears anywhere.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import typer
from operator_harness import Cluster, OperatorThread, finish_run, spec, start_run, wait_for
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner

from ematix_flow import pipeline
from ematix_flow._cli.main import app
from tests.metrics._prom import parse, value

pytestmark = [pytest.mark.db, pytest.mark.k8s]

PLAIN = "Sw33p-Pa55word-7Qz"
RUN_NAMES = ("good", "failing", "unreachable")
ODD = "p@ss:W0rd/Sw%ep#9"  # written percent-encoded in the URL

MODULE = """
from typing import Annotated
from ematix_flow import ematix, pk
from ematix_flow.types import BigInt, Text


@ematix.table(schema="wh", name="cust")
class Cust:
    id: Annotated[BigInt, pk()]
    name: Text


@ematix.table(schema="wh", name="broken")
class Broken:
    id: Annotated[BigInt, pk()]
    name: Text


@ematix.pipeline(target=Cust, mode="merge", source_connection="oltp", schedule="*/5 * * * *")
def good(src, tgt):
    return "SELECT id, name FROM app.people"


@ematix.pipeline(target=Broken, mode="merge", source_connection="oltp", schedule="*/5 * * * *")
def failing(src, tgt):
    return "SELECT id, name FROM app.no_such_table"


@ematix.pipeline(target=Cust, mode="merge", source_connection="down", schedule="*/5 * * * *")
def unreachable(src, tgt):
    return "SELECT id, name FROM app.people"
"""


def _url(url: str, password: str) -> str:
    """The URL form ``postgresql://user:<encoded password>@/db?host=…&port=…`` (host and
    port as parameters: the host may be a unix-socket directory)."""
    p = conninfo_to_dict(url)
    encoded = quote(password, safe="")
    query = f"host={quote(p['host'], safe='')}"
    if p.get("port"):
        query += f"&port={p['port']}"
    return f"postgresql://{p['user']}:{encoded}@/{p['dbname']}?{query}"


def _leaks(text: str) -> list[str]:
    found = []
    for secret in (PLAIN, ODD):
        forms = {secret, quote(secret, safe=""), quote(secret)}
        pieces = {secret[i : i + 6] for i in range(len(secret) - 5)}
        found += [f for f in forms | pieces if f in text]
    return found


class Sweep:
    """Everything printed or stored, labelled, to be searched at the end."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.commands: set[str] = set()

    def add(self, label: str, text: str) -> None:
        self.seen.append((label, text))

    def flow(self, *args: str, codes: tuple[int, ...] = (0,)) -> Any:
        result = CliRunner().invoke(app, list(args))
        label = "flow " + " ".join(args)
        assert isinstance(result.exception, SystemExit | None), (label, result.exception)
        assert result.exit_code in codes, (label, result.exit_code, result.output)
        assert "Traceback" not in result.output, (label, result.output)
        self.add(label, result.output)
        words = [a for a in args if not a.startswith("-")]
        if words[:1] in (["connections"], ["dev-db"], ["state"]):
            self.commands.add(" ".join(words[:2]))
        elif words:
            self.commands.add(words[0])
        return result


def _all_commands() -> set[str]:
    root = typer.main.get_command(app)
    names = set()
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None) or {}
        names |= {f"{name} {sub}" for sub in subs} if subs else {name}
    return names


@dataclass(frozen=True)
class Project:
    source_url: str
    warehouse_url: str


@pytest.fixture
def project(own_role: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    # Each database is owned by a role whose password is a marker: logins really use it.
    dbs = Project(own_role(ODD).new_database(), own_role(PLAIN).new_database())
    with psycopg.connect(dbs.source_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA app")
        conn.execute("CREATE TABLE app.people (id bigint PRIMARY KEY, name text)")
        conn.execute("INSERT INTO app.people VALUES (1, 'a'), (2, 'b')")
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", dbs.warehouse_url)
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLTP", _url(dbs.source_url, ODD))
    monkeypatch.setenv(
        "EMATIX_FLOW_DSN_DOWN", f"postgresql://app:{quote(ODD, safe='')}@/db?host=/nonexistent"
    )
    Path(".ematix-flow.toml").write_text(
        f'[connections.filed]\ndsn = "postgresql://app:{PLAIN}@/db?host=/nonexistent"\n'
    )
    Path("sweep_pipes.py").write_text(MODULE)
    monkeypatch.setattr(sys, "path", [str(Path.cwd()), *sys.path])
    yield dbs
    for name in ("good", "failing", "unreachable"):
        pipeline._unregister(name)
    sys.modules.pop("sweep_pipes", None)


def test_no_password_in_any_output_history_summary_status_or_event(
    project: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cluster: Cluster,
    operator_thread: OperatorThread,
    ns: str,
) -> None:
    sweep = Sweep()
    m = ("--module", "sweep_pipes")
    sweep.flow("--help")
    sweep.flow("--version")
    for fmt in ("text", "json"):
        f = ("--format", fmt)
        sweep.flow("connections", "list", *f)
        sweep.flow("connections", "check", *f, codes=(1,))  # 'down' and 'filed' fail
        sweep.flow("connections", "check", "oltp", *f)
        sweep.flow("connections", "check", "down", "--timeout", "1", *f, codes=(1,))
        sweep.flow("list", *m, *f)
        for name, codes in (("good", (0,)), ("failing", (1,)), ("unreachable", (1,))):
            for command in ("preview", "dry-run"):
                sweep.flow(command, name, *m, *f, codes=codes)
                sweep.flow(command, name, *m, "--verbose", *f, codes=codes)
        summaries = []
        prom = tmp_path / f"flow-{fmt}.prom"
        for name, code in (("good", 0), ("failing", 1), ("unreachable", 1)):
            path = tmp_path / f"termination-{name}-{fmt}"
            monkeypatch.setenv("EMATIX_FLOW_TERMINATION_MESSAGE_PATH", str(path))
            sweep.flow("run", name, *m, *f, "--metrics-file", str(prom), codes=(code,))
            summaries.append((name, code, path.read_text()))
            sweep.add(f"termination summary of {name}", summaries[-1][2])
        monkeypatch.delenv("EMATIX_FLOW_TERMINATION_MESSAGE_PATH")
        # the two that failed just now are due again at once (whatever the clock says)
        sweep.flow("run-due", *m, *f, "--retry-failed", "--metrics-file", str(prom), codes=(1,))
        sweep.add(f"metrics file ({fmt})", prom.read_text())
        for name in ("good", "failing"):
            sweep.flow("history", name, *m, *f)
        # history lives in the targets' connections: the unreachable source is not opened
        sweep.flow("history", "unreachable", *m, *f)
        # the state actions, on a reachable target and on an unreachable one
        sweep.flow("state", "show", "good", *m, *f)
        sweep.flow("state", "show", "unreachable", *m, *f, codes=(0, 1))
        sweep.flow("state", "reset", "good", *m, "--preview", *f)
        sweep.flow("state", "reset", "unreachable", *m, "--preview", *f, codes=(0, 1))
        sweep.flow(
            "backfill", "good", *m, "--from", "0", "--to", "10", "--preview", *f, codes=(0, 1, 3)
        )
        sweep.flow("run", "good", *m, "--full-refresh", *f)
    sweep.flow("export-k8s", *m, "--image", "registry.example/p:1")
    sweep.flow(
        "export-k8s", *m, "--image", "registry.example/p:1", "--job", "run good --full-refresh"
    )
    sweep.flow("dev-db", "status", codes=(0, 1))
    sweep.flow("dev-db", "url", codes=(0, 1, 3))
    sweep.flow("connections", "set", f"saved=postgresql://app:{quote(ODD, safe='')}@h/db")
    sweep.flow("connections", "list")
    saved = (Path(os.environ["HOME"]) / ".ematix-flow" / "connections.toml").read_text()
    assert quote(ODD, safe="") in saved  # stored where the user asked, and only there
    assert _leaks(saved), "the leak detector must see the password where it is stored"
    sweep.flow("connections", "remove", "saved", codes=(2,))  # no terminal: asks for --yes
    sweep.flow("connections", "remove", "saved", "--yes")

    with psycopg.connect(project.warehouse_url, autocommit=True) as conn:
        rows = conn.execute("SELECT row_to_json(h)::text FROM ematix_flow.run_history h")
        history = [r[0] for r in rows]
    assert {json.loads(h)["status"] for h in history} >= {"succeeded", "failed"}
    sweep.add("run_history", "\n".join(history))

    # The operator reads the summaries back into the status and Events.
    for i, (name, code, message) in enumerate(summaries):
        resource = f"sweep-{name}"
        cluster.create_pipeline(ns, resource, spec(pipeline=name))
        wait_for(lambda r=resource: cluster.cronjob(ns, r), what=f"{resource}'s CronJob")
        job = f"{resource}-{i}"
        start_run(cluster, ns, resource, job, at="2026-11-29T06:00:00Z")
        finish_run(cluster, ns, job, exit_code=code, message=message, at="2026-11-29T06:00:09Z")
        wait_for(
            lambda r=resource: (
                (cluster.status(ns, r).get("lastRun") or {}).get("phase") in ("Succeeded", "Failed")
            ),
            what=f"{resource}'s run in its status",
        )
        sweep.add(f"status of {resource}", json.dumps(cluster.status(ns, resource)))
        sweep.add(f"events of {resource}", json.dumps(cluster.events(ns, resource)))
    # The operator's /metrics, once it has seen every run (labels and help texts).
    assert operator_thread.operator is not None and operator_thread.operator.metrics.url

    def scraped() -> str | None:
        with urllib.request.urlopen(operator_thread.operator.metrics.url, timeout=10) as r:
            text = r.read().decode()
        samples = parse(text)
        runs = "ematix_flow_pipeline_last_run_success"
        seen = [value(samples, runs, namespace=ns, name=f"sweep-{n}") for n in RUN_NAMES]
        return text if None not in seen else None

    sweep.add("operator /metrics", wait_for(scraped, what="every run in the operator's metrics"))

    # demo and dev-db start/stop run an embedded server of their own (trust login, no
    # password anywhere): nothing of a user's DSN to leak; they are tested in tests/demo.
    assert _all_commands() - sweep.commands == {"demo", "dev-db start", "dev-db stop"}
    # The sweep is not vacuous: the failures' own messages reached every place searched.
    seen = dict(sweep.seen)
    assert "no_such_table" in seen["status of sweep-failing"]
    assert "cannot connect to 'down'" in seen["status of sweep-unreachable"]
    assert "cannot connect to 'down'" in seen["termination summary of unreachable"]
    assert "/nonexistent" in seen["flow connections check down --timeout 1 --format text"]
    assert 'pipeline="unreachable"' in seen["metrics file (json)"]
    assert 'name="sweep-failing"' in seen["operator /metrics"]
    leaks = [(label, _leaks(text)) for label, text in sweep.seen if _leaks(text)]
    assert leaks == []
    assert len(sweep.seen) > 60
