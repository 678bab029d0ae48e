"""The chart's alert rules, checked by the real promtool: ``promtool check rules`` on
the rendered PrometheusRule, and ``promtool test rules`` with alert_rules_test.yaml (each
alert firing once and silent once)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.metrics._chart import rule_groups
from tests.metrics._prom import promtool

pytestmark = pytest.mark.k8s

HERE = Path(__file__).resolve().parent
ALERTS = {
    "EmatixFlowPipelineFailing",
    "EmatixFlowPipelineOverdue",
    "EmatixFlowPipelineNotReady",
    "EmatixFlowOperatorDown",
}


def _alerts(groups: dict) -> dict[str, dict]:
    return {r["alert"]: r for g in groups["groups"] for r in g["rules"]}


def test_rules_pass_promtool_check_and_unit_tests(helm: Path, tmp_path: Path) -> None:
    groups = rule_groups(helm)
    assert set(_alerts(groups)) == ALERTS
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
    shutil.copy(HERE / "alert_rules_test.yaml", tmp_path)

    checked = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout

    tested = promtool("test", "rules", "alert_rules_test.yaml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_runbook_and_is_tested_both_ways() -> None:
    cases = yaml.safe_load((HERE / "alert_rules_test.yaml").read_text())["tests"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
            for alert in check["exp_alerts"]:
                notes = alert["exp_annotations"]
                assert {"summary", "description", "runbook_url"} <= set(notes)
                assert notes["runbook_url"].endswith("#" + check["alertname"].lower())
    assert firing == silent == ALERTS


def test_values_shape_the_rules(helm: Path) -> None:
    alerts = _alerts(
        rule_groups(
            helm,
            "metrics.prometheusRule.failingThreshold=5",
            "metrics.prometheusRule.overdueGraceSeconds=900",
            "metrics.prometheusRule.disabled={EmatixFlowPipelineNotReady}",
            "metrics.prometheusRule.severity=page",
            "metrics.prometheusRule.runbookBaseUrl=https://wiki.example/flow",
        )
    )
    assert set(alerts) == ALERTS - {"EmatixFlowPipelineNotReady"}
    assert alerts["EmatixFlowPipelineFailing"]["expr"].endswith(">= 5")
    assert alerts["EmatixFlowPipelineOverdue"]["expr"].endswith("> 900")
    assert alerts["EmatixFlowPipelineFailing"]["labels"]["severity"] == "page"
    assert alerts["EmatixFlowOperatorDown"]["annotations"]["runbook_url"] == (
        "https://wiki.example/flow#ematixflowoperatordown"
    )


@pytest.mark.parametrize(
    ("sets", "job"),
    [
        ((), "flow-ematix-flow-operator-metrics"),
        (("metrics.serviceMonitor.enabled=true",), "flow-ematix-flow-operator-metrics"),
        (("metrics.podMonitor.enabled=true",), "ematix-system/flow-ematix-flow-operator"),
        (("metrics.prometheusRule.operatorJob=flow-operator",), "flow-operator"),
    ],
)
def test_operator_down_watches_the_job_the_scrape_gets(
    helm: Path, sets: tuple[str, ...], job: str
) -> None:
    expr = _alerts(rule_groups(helm, *sets))["EmatixFlowOperatorDown"]["expr"]
    assert expr == f'up{{job="{job}"}} == 0 or absent(up{{job="{job}"}})'
