"""The operator as deployed: the console script, namespace scoping, the periodic re-check.

Each test gets a cluster of its own, so operators with other settings (or a separate
process) never compete with the module's shared operator.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ematix_flow_operator import Operator, OperatorConfig
from operator_harness import (
    Cluster,
    OperatorThread,
    conditions,
    finish_run,
    spec,
    start_run,
    summary,
    wait_for,
)

from tests.metrics._prom import parse, value

pytestmark = pytest.mark.k8s


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path) as running:
        yield running


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_namespace_scoping(own_cluster: Cluster) -> None:
    own_cluster.add_namespace("team-a")
    own_cluster.add_namespace("team-b")
    runner = OperatorThread(own_cluster, namespaces=("team-a",)).start()
    try:
        own_cluster.create_pipeline("team-b", "elsewhere", spec())
        own_cluster.create_pipeline("team-a", "mine", spec())
        wait_for(lambda: own_cluster.cronjob("team-a", "mine"), what="team-a reconciled")
        own_cluster.create_pipeline("team-a", "second", spec())
        wait_for(lambda: own_cluster.cronjob("team-a", "second"), what="team-a reconciled")
        # Created first, never touched: the operator does not watch team-b at all.
        assert own_cluster.cronjob("team-b", "elsewhere") is None
        assert own_cluster.status("team-b", "elsewhere") == {}
        assert own_cluster.requests("GET", "/namespaces/team-b/") == 0
    finally:
        runner.stop()


def test_periodic_recheck_restores_and_catches_up(own_cluster: Cluster) -> None:
    """What happened while nobody watched is repaired by :meth:`Operator.recheck`."""
    ns = "data"
    runner = OperatorThread(own_cluster, recheck_interval=0.3).start()
    try:
        own_cluster.create_pipeline(ns, "nightly", spec())
        wait_for(lambda: own_cluster.cronjob(ns, "nightly"), what="the CronJob")
        # The loop runs on its own: it lists the resource's Jobs every interval.
        lists = f"/apis/batch/v1/namespaces/{ns}/jobs"
        wait_for(lambda: own_cluster.requests("GET", lists) >= 2, what="two periodic re-checks")
    finally:
        runner.stop()

    # With the operator gone, the CronJob is deleted by hand…
    own_cluster.batch.delete_namespaced_cron_job("nightly", ns)
    op = Operator(OperatorConfig(all_namespaces=True, kubeconfig=str(own_cluster.kubeconfig)))
    op.login()
    op.recheck(ns, "nightly")
    assert own_cluster.cronjob(ns, "nightly") is not None

    # …and a run happens unobserved.
    start_run(own_cluster, ns, "nightly", "nightly-1", at="2026-11-29T02:00:00Z")
    finish_run(
        own_cluster,
        ns,
        "nightly-1",
        exit_code=0,
        message=summary(
            {"target": "wh.t", "mode": "append", "status": "succeeded", "rows_inserted": 3},
            ok=True,
        ),
        at="2026-11-29T02:00:04Z",
    )
    op.recheck(ns, "nightly")

    assert own_cluster.cronjob(ns, "nightly") is not None
    status = own_cluster.status(ns, "nightly")
    assert status["lastRun"]["jobName"] == "nightly-1"
    assert status["lastRun"]["targets"][0]["rowsInserted"] == 3
    assert conditions(status)["LastRunSucceeded"]["status"] == "True"
    assert "CronJobCreated" in {e["reason"] for e in own_cluster.events(ns, "nightly")}
    # A second pass finds nothing to do: no write, no new Event.
    writes = own_cluster.requests("PATCH", "/status") + own_cluster.requests("POST", "/events")
    op.recheck(ns, "nightly")
    assert (
        own_cluster.requests("PATCH", "/status") + own_cluster.requests("POST", "/events") == writes
    )


def test_console_script_runs_the_operator(own_cluster: Cluster, tmp_path: Path) -> None:
    port, metrics_port = _free_port(), _free_port()
    env = dict(os.environ, EMATIX_FLOW_OPERATOR_DEFAULT_IMAGE="registry.example/default:2.0")
    stderr = (tmp_path / "operator.log").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("ematix-flow-operator")),
            "--all-namespaces",
            f"--kubeconfig={own_cluster.kubeconfig}",
            f"--liveness=http://127.0.0.1:{port}/healthz",
            f"--metrics=http://127.0.0.1:{metrics_port}/metrics",
            "--log-format=json",
            "--recheck-interval=30",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    return r.status == 200
            except OSError:
                assert proc.poll() is None, "the operator exited"
                return False

        wait_for(healthy, timeout=30, what="the liveness endpoint")
        no_image = {k: v for k, v in spec().items() if k != "image"}
        own_cluster.create_pipeline("apps", "from-cli", no_image)
        cj = wait_for(lambda: own_cluster.cronjob("apps", "from-cli"), what="the CronJob")
        container = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "registry.example/default:2.0"

        def scraped() -> bool:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as r:
                text = r.read().decode()
            ready = value(
                parse(text), "ematix_flow_pipeline_ready", namespace="apps", name="from-cli"
            )
            return ready == 1

        wait_for(scraped, what="the resource on the operator's --metrics endpoint")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        stderr.close()
    assert code == 0
    lines = [line for line in (tmp_path / "operator.log").read_text().splitlines() if line]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any("CronJob apps/from-cli created" in r.get("message", "") for r in records)
    assert all({"message", "timestamp"} <= r.keys() for r in records)


def test_the_command_demands_a_scope() -> None:
    from ematix_flow_operator.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [], env={"EMATIX_FLOW_OPERATOR_NAMESPACES": ""})
    assert result.exit_code == 3
    assert "--all-namespaces" in result.output and "--namespace" in result.output


# --- least privilege: what the operator really calls vs. what the chart grants --------------

HELPERS = Path(__file__).resolve().parents[2] / "charts/ematix-flow-operator/templates/_helpers.tpl"
DISCOVERY = re.compile(r"^/(version|api|apis)(/[^/]+){0,2}/?$")


def chart_rules(define: str) -> list[dict[str, Any]]:
    """The RBAC rules of a named definition in the chart's _helpers.tpl (plain YAML)."""
    text = HELPERS.read_text()
    start = text.index(f'{{{{- define "ematix-flow-operator.{define}" -}}}}')
    body = text[text.index("\n", start) + 1 : text.index("{{- end }}", start)]
    return list(yaml.safe_load(body))


def permission(method: str, path: str, query: str) -> tuple[str, str, str] | None:
    """(API group, resource[/subresource], verb) of a request; None for discovery."""
    if DISCOVERY.match(path) and not path.startswith("/api/v1/namespaces"):
        return None
    parts = path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    resource, name, sub = rest[0], (rest[1:2] or [None])[0], "/".join(rest[2:])
    watch = "watch=true" in query
    verb = {
        "GET": "watch" if watch else ("get" if name else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    }[method]
    return group, f"{resource}/{sub}" if sub else resource, verb


def allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in rules
    )


def test_the_chart_grants_exactly_what_the_operator_uses(own_cluster: Cluster) -> None:
    own_cluster.add_namespace("data")
    runner = OperatorThread(own_cluster, namespaces=("data",), recheck_interval=0.3).start()
    try:
        own_cluster.create_pipeline("data", "rbac", spec())
        wait_for(lambda: own_cluster.cronjob("data", "rbac"), what="the CronJob")
        own_cluster.patch_pipeline("data", "rbac", {"suspend": True})
        wait_for(lambda: own_cluster.cronjob("data", "rbac")["spec"]["suspend"], what="update")
        own_cluster.batch.delete_namespaced_cron_job("rbac", "data")
        wait_for(lambda: own_cluster.cronjob("data", "rbac"), what="the CronJob restored")
        start_run(own_cluster, "data", "rbac", "rbac-1", at="2026-11-29T01:00:00Z")
        finish_run(
            own_cluster, "data", "rbac-1", exit_code=1, message="boom", at="2026-11-29T01:00:01Z"
        )
        wait_for(lambda: own_cluster.status("data", "rbac").get("consecutiveFailures"), what="run")
        own_cluster.create_pipeline("data", "invalid", spec(schedule="61 * * * *"))
        wait_for(lambda: own_cluster.status("data", "invalid").get("conditions"), what="invalid")
    finally:
        runner.stop()

    rules = chart_rules("clusterRules") + chart_rules("namespacedRules")
    used = {
        perm
        for call in own_cluster.calls()
        if call.agent.startswith(("kopf/", "ematix-flow-operator/"))
        if (perm := permission(call.method, call.path, call.query)) is not None
    }
    missing = sorted(p for p in used if not allowed(rules, *p))
    assert not missing, f"the operator calls what the chart does not grant: {missing}"
    # Least privilege the other way round: no Secrets, nothing on pods but reading.
    assert not any("secrets" in rule["resources"] for rule in rules)
    assert {v for g, r, v in used if r == "pods"} <= {"get", "list", "watch"}
    assert ("batch", "cronjobs", "update") in used  # replace, as the chart allows
