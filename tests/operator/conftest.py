"""Fixtures of the operator tests: one emulated cluster per module, one operator.

Every test works in a namespace of its own (``ns``), so tests share the cluster and
the running operator without seeing each other's objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from operator_harness import RESOURCE, Cluster, OperatorThread

from ematix_flow._k8s.model import GROUP, PLURAL, VERSION


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("k8s")) as running:
        yield running


@pytest.fixture(scope="module")
def operator_thread(cluster: Cluster) -> Iterator[OperatorThread]:
    runner = OperatorThread(cluster).start()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace; its EmatixPipelines (and by GC their CronJobs) deleted after."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    yield name
    for body in cluster.list(RESOURCE, name):
        cluster.custom.delete_namespaced_custom_object(
            GROUP, VERSION, name, PLURAL, body["metadata"]["name"]
        )
