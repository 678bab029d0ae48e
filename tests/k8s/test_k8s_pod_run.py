"""What a pipeline pod does, minus Kubernetes: the CronJob's own command and variables.

The command and environment come from :func:`render_cronjob`; the Secrets are replaced by
the DSNs of the test databases under the variable names the CronJob gives them. The
termination-message file the run leaves is then read back as the operator reads it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ematix_flow._k8s.cronjob import FAIL_FAST_EXIT_CODES, render_cronjob
from ematix_flow._k8s.summary import (
    MAX_BYTES,
    TERMINATION_MESSAGE_ENV,
    parse_termination_summary,
)

pytestmark = [pytest.mark.db, pytest.mark.k8s]

MODULE = textwrap.dedent(
    """
    from ematix_flow import pipeline
    from ematix_flow.source import Source
    from ematix_flow.table import ManagedTable
    from ematix_flow.types import BigInt, Column, Text


    class Customer(ManagedTable):
        __schema__ = "warehouse"
        __tablename__ = "pod_customer"

        customer_id = Column(BigInt(), nullable=False, primary_key=True)
        name = Column(Text())


    def _sync(sql, target_connection="warehouse"):
        return pipeline.sync(
            target=Customer,
            source=Source.postgres_query("oltp", sql),
            target_connection=target_connection,
            mode="merge",
        )


    @pipeline.register(name="pod_sync", schedule="@hourly", connections=("oltp", "warehouse"))
    def pod_sync():
        return _sync("SELECT id AS customer_id, name FROM users")


    @pipeline.register(name="pod_broken", schedule="@hourly", connections=("oltp", "warehouse"))
    def pod_broken():
        return _sync("SELECT id AS customer_id, name FROM no_such_table")

    """
)

CONNECTIONS = [
    {"name": "oltp", "secretName": "ematix-flow-oltp"},
    {"name": "warehouse", "secretName": "ematix-flow-warehouse"},
]


def _pod(pipeline: str, workdir: Path, secrets: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the container of the CronJob for ``pipeline`` as a local process."""
    spec = {
        "pipeline": pipeline,
        "module": "pod_pipelines",
        "image": "unused",
        "schedule": "@hourly",
        "connections": CONNECTIONS,
    }
    cronjob = render_cronjob("p", "data", "uid", spec)
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMATIX_FLOW_DSN")}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            if ref["name"] in secrets:  # a Secret that does not exist leaves the variable out
                env[var["name"]] = secrets[ref["name"]]
    message = workdir / "termination-log"
    env[TERMINATION_MESSAGE_ENV] = str(message)  # /dev/termination-log in the pod
    env["HOME"] = str(workdir)
    command = container["command"]
    assert command[0] == "flow"
    return subprocess.run(
        [sys.executable, "-m", "ematix_flow._cli.main", *command[1:]],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def workdir(dbs: Any, tmp_path: Path) -> Path:
    with dbs.connect("source") as conn:
        conn.execute(
            "CREATE TABLE users (id bigint PRIMARY KEY, name text);"
            "INSERT INTO users VALUES (1, 'a'), (2, 'b'), (3, NULL)"
        )
    (tmp_path / "pod_pipelines.py").write_text(MODULE)
    return tmp_path


def _secrets(dbs: Any) -> dict[str, str]:
    return {"ematix-flow-oltp": dbs.source_url, "ematix-flow-warehouse": dbs.warehouse_url}


def test_successful_run_leaves_its_summary(dbs: Any, workdir: Path) -> None:
    result = _pod("pod_sync", workdir, _secrets(dbs))
    assert result.returncode == 0, result.stdout + result.stderr
    text = (workdir / "termination-log").read_text()
    assert len(text.encode()) <= MAX_BYTES
    summary = parse_termination_summary(text)
    assert summary["ok"] is True
    assert summary["pipeline"] == "pod_sync"
    assert summary["totals"]["rows_inserted"] == 3
    assert summary["targets"][0]["target"] == "warehouse.pod_customer"


def test_failed_run_leaves_its_error_and_exit_code_allows_a_retry(dbs: Any, workdir: Path) -> None:
    result = _pod("pod_broken", workdir, _secrets(dbs))
    assert result.returncode not in (0, *FAIL_FAST_EXIT_CODES), result.stderr
    summary = parse_termination_summary((workdir / "termination-log").read_text())
    assert summary["ok"] is False
    errors = " ".join(str(t.get("error")) for t in summary["targets"]) + str(summary.get("error"))
    assert "no_such_table" in errors
