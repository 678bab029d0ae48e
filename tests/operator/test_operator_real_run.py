"""A real ``flow run`` against PostgreSQL, its termination message read back by the operator.

The pipeline module is the one ``scripts/e2e-kind.sh`` bakes into its pipeline image, so
this test also keeps the kind script's pipeline honest. The run writes its summary
where a pod's ``terminationMessagePath`` would be; the test then plays the CronJob
controller with that exact message and exit code, and the running operator must report
the run's real figures in the resource's status.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import Cluster, OperatorThread, conditions, finish_run, start_run, wait_for

from ematix_flow._k8s.model import GROUP, PLURAL, VERSION

pytestmark = [pytest.mark.k8s, pytest.mark.db]

E2E_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "e2e-kind.sh"


def e2e_module() -> str:
    """The pipeline module embedded in the kind script (between its heredoc markers)."""
    text = E2E_SCRIPT.read_text()
    match = re.search(r"<<'PY'\n(.*?)\nPY\n", text, re.DOTALL)
    assert match, "scripts/e2e-kind.sh no longer embeds its pipeline module"
    return match.group(1) + "\n"


def flow(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ematix_flow._cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def test_a_real_run_summary_reaches_the_status(
    cluster: Cluster, operator_thread: OperatorThread, dbs: Any, tmp_path: Path
) -> None:
    (tmp_path / "e2e_pipelines.py").write_text(e2e_module())
    with dbs.connect("source") as conn:
        conn.execute(
            "CREATE TABLE public.e2e_source (id bigint PRIMARY KEY, name text);"
            "INSERT INTO public.e2e_source VALUES (1, 'ada'), (2, 'grace'), (3, 'edsger')"
        )
    termination = tmp_path / "termination-log"
    env = dict(
        os.environ,
        EMATIX_FLOW_DSN_SOURCE=dbs.source_url,
        EMATIX_FLOW_DSN_WAREHOUSE=dbs.warehouse_url,
        EMATIX_FLOW_TERMINATION_MESSAGE_PATH=str(termination),
    )
    ns = "e2e"
    exported = flow(
        "export-k8s", "--module", "e2e_pipelines", "--image", "pipelines:e2e",
        "--namespace", ns, "--output", "-", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    (doc,) = [d for d in yaml.safe_load_all(exported.stdout) if d]
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc)
    name = doc["metadata"]["name"]
    wait_for(lambda: cluster.cronjob(ns, name), what="the CronJob")

    run = flow("run", "e2e_sync", "--module", "e2e_pipelines", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    message = termination.read_text()

    start_run(cluster, ns, name, f"{name}-1", at="2026-11-29T08:00:00Z")
    finish_run(
        cluster, ns, f"{name}-1", exit_code=run.returncode, message=message,
        at="2026-11-29T08:00:02Z",
    )  # fmt: skip
    status = wait_for(
        lambda: (s := cluster.status(ns, name)).get("lastSuccessfulTime") and s,
        what="the run in the status",
    )
    assert status["lastRun"]["targets"] == [
        {
            "target": "public.e2e_target",
            "mode": "merge",
            "status": "succeeded",
            "rowsInserted": 3,
            "rowsUpdated": 0,
            "rowsDeleted": 0,
            "rowsUnchanged": 0,
            "rowsExpired": 0,
        }
    ]
    assert conditions(status)["LastRunSucceeded"]["message"].endswith(
        "1 target: 3 inserted, 0 updated, 0 deleted"
    )
