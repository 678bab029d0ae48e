"""Fixtures of the reliability tests: the emulated cluster and the operator of
``tests/operator`` (its harness imported, not copied), one per module."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))

from operator_harness import RESOURCE, Cluster, OperatorThread

from ematix_flow._k8s.model import GROUP, PLURAL, VERSION


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("k8s-rel")) as running:
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
    """A fresh namespace; its EmatixPipelines deleted after the test."""
    name = f"r-{uuid.uuid4().hex[:8]}"
    yield name
    for body in cluster.list(RESOURCE, name):
        cluster.custom.delete_namespaced_custom_object(
            GROUP, VERSION, name, PLURAL, body["metadata"]["name"]
        )
