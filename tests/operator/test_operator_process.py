"""The operator as deployed: the console script, namespace scoping, the periodic re-check.

Each test gets a cluster of its own, so operators with other settings (or a separate
process) never compete with the module's shared operator.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
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
    port = _free_port()
    env = dict(os.environ, EMATIX_FLOW_OPERATOR_DEFAULT_IMAGE="registry.example/default:2.0")
    stderr = (tmp_path / "operator.log").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("ematix-flow-operator")),
            "--all-namespaces",
            f"--kubeconfig={own_cluster.kubeconfig}",
            f"--liveness=http://127.0.0.1:{port}/healthz",
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
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        stderr.close()
    assert code == 0
    lines = [line for line in (tmp_path / "operator.log").read_text().splitlines() if line]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any("CronJob apps/from-cli created" in r.get("message", "") for r in records)
    assert all({"message", "timestamp"} <= r.keys() for r in records)


def test_console_script_demands_a_scope() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ematix-flow-operator"))],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "EMATIX_FLOW_OPERATOR_NAMESPACES"},
    )
    assert result.returncode == 3
    assert "--all-namespaces" in result.stderr and "--namespace" in result.stderr
