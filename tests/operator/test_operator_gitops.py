"""The GitOps path end to end: ``flow export-k8s`` output applied to the API and reconciled.

The spec's §4 worked example is written as a user's module, exported by the real
command in a process of its own, every document created in the emulated cluster as
``kubectl apply -f`` would, and the running operator turns it into a CronJob.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from operator_harness import Cluster, OperatorThread, container_of, ready, wait_for
from spec_examples import SECTION_4_AFTER, write

from ematix_flow._k8s.model import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.k8s

IMAGE = "registry.example/team/pipelines:1.4.0"


def test_exported_spec_example_is_reconciled(
    cluster: Cluster, operator_thread: OperatorThread, tmp_path: Path
) -> None:
    write(tmp_path, SECTION_4_AFTER, "purchase_features")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ematix_flow._cli.main",
            "export-k8s",
            "--module",
            "purchase_features",
            "--image",
            IMAGE,
            "--namespace",
            "analytics",
            "--output",
            "-",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert len(docs) == 1
    (doc,) = docs

    # `kubectl apply -f` of the GitOps file: the document is created as written.
    namespace = doc["metadata"]["namespace"]
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)

    name = doc["metadata"]["name"]
    cj = wait_for(lambda: cluster.cronjob(namespace, name), what="the exported pipeline's CronJob")
    status = ready(cluster, namespace, name)
    assert status["cronJobName"] == name
    assert cj["spec"]["schedule"] == "0 */6 * * *"
    container = container_of(cj)
    assert container["image"] == IMAGE
    assert container["command"] == [
        "flow",
        "run",
        "sync_user_purchase_features",
        "--module",
        "purchase_features",
    ]
    secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert secrets == {
        "EMATIX_FLOW_DSN_OLTP": {"name": "ematix-flow-oltp", "key": "dsn"},
        "EMATIX_FLOW_DSN_WAREHOUSE": {"name": "ematix-flow-warehouse", "key": "dsn"},
    }
    # The Secrets the user must create are the ones the CronJob reads.
    for secret in secrets.values():
        assert secret["name"] in result.stderr
