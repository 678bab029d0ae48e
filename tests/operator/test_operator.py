"""The real kopf operator against the emulated Kubernetes API, over HTTP."""

from __future__ import annotations

import pytest
from operator_harness import Cluster, OperatorThread, wait_for

pytestmark = pytest.mark.k8s


def spec(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "pipeline": "customer_sync",
        "module": "my_pipelines",
        "image": "registry.example/pipelines:1.0",
        "schedule": "0 */6 * * *",
        "connections": [
            {"name": "oltp", "secretName": "oltp-dsn"},
            {"name": "warehouse", "secretName": "warehouse-dsn", "key": "url"},
        ],
    }
    base.update(overrides)
    return base


def test_create_renders_cronjob(cluster: Cluster, operator_thread: OperatorThread, ns: str) -> None:
    created = cluster.create_pipeline(ns, "customers", spec())
    cj = wait_for(lambda: cluster.cronjob(ns, "customers"), what="the CronJob")
    assert cj["spec"]["schedule"] == "0 */6 * * *"
    container = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["flow", "run", "customer_sync", "--module", "my_pipelines"]
    env = {e["name"]: e for e in container["env"]}
    assert env["EMATIX_FLOW_DSN_OLTP"]["valueFrom"]["secretKeyRef"] == {
        "name": "oltp-dsn",
        "key": "dsn",
    }
    assert env["EMATIX_FLOW_DSN_WAREHOUSE"]["valueFrom"]["secretKeyRef"] == {
        "name": "warehouse-dsn",
        "key": "url",
    }
    (owner,) = cj["metadata"]["ownerReferences"]
    assert owner["uid"] == created["metadata"]["uid"]
    assert owner["kind"] == "EmatixPipeline" and owner["controller"] is True
    status = wait_for(
        lambda: (s := cluster.status(ns, "customers")).get("cronJobName") and s, what="status"
    )
    assert status["observedGeneration"] == 1
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "True"
