"""Fixtures of the operator tests: one emulated cluster per module, one operator.

Every test works in a namespace of its own (``ns``), so tests share the cluster and
the running operator without seeing each other's objects. The fixtures are
:func:`operator_harness.cluster_fixtures`, shared with ``tests/reliability``.
"""

from __future__ import annotations

from operator_harness import cluster_fixtures

cluster, operator_thread, ns = cluster_fixtures(folder="k8s", namespace_prefix="t-")
