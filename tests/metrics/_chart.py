"""The chart rendered by helm for the monitoring tests (release ``flow``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.k8s._helm import run_helm
from tests.metrics._prom import CHART

NAMESPACE = "ematix-system"


def render(helm: Path, *sets: str) -> list[dict[str, Any]]:
    """The chart's objects rendered as release ``flow`` in :data:`NAMESPACE`."""
    args = [a for s in sets for a in ("--set", s)]
    result = run_helm(helm, "template", "flow", str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def rule_groups(helm: Path, *sets: str) -> dict[str, Any]:
    """The rendered PrometheusRule's spec, as a Prometheus rule file."""
    docs = render(helm, "metrics.prometheusRule.enabled=true", *sets)
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    return {"groups": rule["spec"]["groups"]}
