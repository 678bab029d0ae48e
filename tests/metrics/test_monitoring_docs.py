"""docs/monitoring.md against the code: the metric reference is generated from the
catalogue, and every metric the alerts and the dashboard use is in it."""

from __future__ import annotations

import json
import re

from metrics_reference import DOC, current, render

from ematix_flow._metrics import METRICS
from tests.metrics._prom import CHART

KNOWN = {m.sample_name for m in METRICS}
_NAME = re.compile(r"\bematix_flow_(?:pipeline|target|operator)_[a-z_]+\b")


def test_reference_is_generated_from_the_catalogue() -> None:
    assert current() == render(), (
        "docs/monitoring.md's metric reference is out of date with ematix_flow._metrics; "
        "regenerate it with `.venv/bin/python tests/metrics/metrics_reference.py --write`"
    )


def test_alerts_dashboard_and_docs_use_only_metrics_that_exist() -> None:
    rules = (CHART / "templates" / "prometheusrule.yaml").read_text()
    dashboard = json.loads((CHART / "dashboards" / "ematix-flow.json").read_text())
    queries = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for where, text in (("rules", rules), ("dashboard", queries), ("docs", DOC.read_text())):
        used = set(_NAME.findall(text))
        assert used <= KNOWN, (where, used - KNOWN)
    # Every alert has its runbook section in the page its runbook_url points at.
    for alert in re.findall(r"alert: (\w+)", rules):
        assert f"\n### {alert}\n" in DOC.read_text()


def test_help_texts_name_no_secret_and_metric_names_are_conventional() -> None:
    for m in METRICS:
        assert re.fullmatch(r"ematix_flow_(pipeline|target|operator)_[a-z_]+", m.name), m.name
        assert not m.name.endswith("_total"), "counters get _total from the client"
        assert m.help.endswith(".") and len(m.help) < 300
        assert not re.search(r"dsn|password|postgres(ql)?://", m.help, re.IGNORECASE), m.name
