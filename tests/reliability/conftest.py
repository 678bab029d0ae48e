"""Fixtures of the reliability tests: the emulated cluster and the operator of
``tests/operator`` (its harness and fixtures imported, not copied), one per module."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))

from operator_harness import cluster_fixtures

cluster, operator_thread, ns = cluster_fixtures(folder="k8s-rel", namespace_prefix="r-")
