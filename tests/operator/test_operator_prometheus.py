"""A real Prometheus (Debian's package) scrapes the running operator, loads the chart's
alert rules, and evaluates every query of the chart's Grafana dashboard without error."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import Cluster, OperatorThread, finish_run, ready, spec, start_run, summary

from tests.k8s._helm import ensure_helm
from tests.metrics._chart import rule_groups
from tests.metrics._prom import CHART, PrometheusServer, prometheus_tools

pytestmark = pytest.mark.k8s

DASHBOARD = CHART / "dashboards" / "ematix-flow.json"
JOB = "flow-ematix-flow-operator-metrics"
# Grafana's variables, as "All" and its built-in intervals expand them.
VARIABLES = {"$namespace": ".*", "$name": ".*", "$__rate_interval": "1m", "$__interval": "15s"}


def _expand(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"an unknown variable in {expr!r}"
    return expr


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every templating query."""
    found = [
        (f"panel {p['title']!r} {t['refId']}", _expand(t["expr"]))
        for p in dashboard["panels"]
        for t in p.get("targets", ())
    ]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            # label_values(SELECTOR, label) is Grafana's: Prometheus answers SELECTOR.
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", var["query"]["query"])
            assert match, var["query"]
            found.append((f"variable {var['name']}", _expand(match[1])))
    return found


def _wait(prom: PrometheusServer, what: str, probe: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}: {prom.log.read_text()[-2000:]}")
        time.sleep(0.3)


def test_prometheus_scrapes_the_operator_and_runs_every_dashboard_query(
    cluster: Cluster, operator_thread: OperatorThread, ns: str, tmp_path: Path
) -> None:
    prometheus_tools()  # installs Debian's prometheus when missing, or skips saying why
    cluster.create_pipeline(ns, "orders", spec(schedule="*/5 * * * *"))
    ready(cluster, ns, "orders")
    start_run(cluster, ns, "orders", "orders-1", at="2026-11-29T06:00:00Z")
    finish_run(
        cluster,
        ns,
        "orders-1",
        exit_code=0,
        message=summary(
            {
                "target": "wh.orders",
                "mode": "merge",
                "status": "succeeded",
                "rows_inserted": 4,
                "watermark_after": "2026-11-29 05:58:00+00",
            },
            ok=True,
        ),
        at="2026-11-29T06:00:40Z",
    )
    assert operator_thread.operator is not None and operator_thread.operator.metrics.url
    target = operator_thread.operator.metrics.url.removeprefix("http://").removesuffix("/metrics")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(ensure_helm())))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            {"job_name": JOB, "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}
        ],
    }
    with PrometheusServer(tmp_path, config) as prom:
        series = f'ematix_flow_target_watermark_timestamp_seconds{{namespace="{ns}"}}'
        _wait(
            prom, "the operator's series", lambda: prom.api("query", query=series)["data"]["result"]
        )
        targets = prom.api("targets")["data"]["activeTargets"]
        assert [(t["labels"]["job"], t["health"]) for t in targets] == [(JOB, "up")]

        dashboard = json.loads(DASHBOARD.read_text())
        queries = _queries(dashboard)
        assert len(queries) >= 15
        failures = []
        for where, query in queries:
            answer = prom.api("query", query=query)
            if answer.get("status") != "success" or answer.get("warnings"):
                failures.append((where, query, answer))
        assert failures == []
        # The pipeline's own panels show it.
        since = f'time() - ematix_flow_pipeline_last_success_timestamp_seconds{{namespace="{ns}"}}'
        runs = prom.api("query", query=since)["data"]["result"]
        assert [r["metric"]["name"] for r in runs] == ["orders"]

        # Every alert rule loads and evaluates; with the operator up, OperatorDown is quiet
        # (pending only at the first evaluation, if that came before the first scrape).
        def settled() -> list[dict[str, Any]] | None:
            rules = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
            down = [r for r in rules if r["name"] == "EmatixFlowOperatorDown"]
            evaluated = all(not r["lastEvaluation"].startswith("0001") for r in rules)
            return rules if evaluated and down and down[0]["state"] == "inactive" else None

        rules = _wait(prom, "every rule evaluated, the operator seen up", settled)
        assert {r["name"]: r["health"] for r in rules} == {
            "EmatixFlowPipelineFailing": "ok",
            "EmatixFlowPipelineOverdue": "ok",
            "EmatixFlowPipelineNotReady": "ok",
            "EmatixFlowOperatorDown": "ok",
        }
