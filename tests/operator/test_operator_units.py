"""The operator's pure parts: spec checks, drift, status arithmetic, error mapping."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kopf
import pytest
from ematix_flow_operator.errors import (
    ApiCallError,
    InvalidSpecError,
    TransientApiError,
    classify_api_error,
    kopf_errors,
)
from ematix_flow_operator.reconcile import contains, desired_cronjob, drifted, replacement
from ematix_flow_operator.spec import parse_spec
from ematix_flow_operator.status import (
    invalid_status,
    merge_patch,
    reconciled_status,
    run_from_job,
    with_run,
)
from kubernetes.client.exceptions import ApiException

from ematix_flow._errors import ConfigurationError

pytestmark = pytest.mark.k8s

SPEC = {"pipeline": "p", "module": "m", "image": "img:1", "schedule": "@hourly"}
BODY = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"}, "spec": SPEC}


# --- spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason", "names"),
    [
        ({"schedule": "61 * * * *"}, "InvalidSchedule", "spec.schedule"),
        ({"schedule": "0 0 * *"}, "InvalidSchedule", "spec.schedule"),
        ({"timeZone": "Europe/Atlantis"}, "UnknownTimeZone", "spec.timeZone"),
        ({"timeZone": "not a zone"}, "UnknownTimeZone", "spec.timeZone"),
        ({"connections": [{"name": "wh"}]}, "MissingSecretName", "'wh'"),
        ({"image": ""}, "MissingImage", "spec.image"),
        ({"concurrencyPolicy": "Sometimes"}, "InvalidSpec", "spec.concurrencyPolicy"),
        ({"unknownField": 1}, "InvalidSpec", "spec.unknownField"),
    ],
)
def test_parse_spec_names_the_problem(changes: dict[str, Any], reason: str, names: str) -> None:
    with pytest.raises(InvalidSpecError) as info:
        parse_spec({**SPEC, **changes})
    assert info.value.reason == reason
    assert names in info.value.message


def test_parse_spec_accepts_a_valid_spec() -> None:
    model = parse_spec({**SPEC, "timeZone": "Europe/Paris", "schedule": "*/5 * * * 1-5"})
    assert (model.time_zone, model.concurrency_policy) == ("Europe/Paris", "Forbid")


def test_missing_image_without_default_is_invalid_and_default_fills_it() -> None:
    body = {**BODY, "spec": {k: v for k, v in SPEC.items() if k != "image"}}
    with pytest.raises(InvalidSpecError) as info:
        desired_cronjob(body)
    assert info.value.reason == "MissingImage"
    rendered = desired_cronjob(body, default_image="reg/default:1")
    pod = rendered["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "reg/default:1"


# --- drift ---------------------------------------------------------------------------------


def test_drift_ignores_server_defaults_but_not_our_fields() -> None:
    desired = desired_cronjob(BODY)
    live = replacement(desired, {"metadata": {"resourceVersion": "7", "labels": {"x": "y"}}})
    assert live["metadata"]["resourceVersion"] == "7"
    assert live["metadata"]["labels"]["x"] == "y"  # others' labels kept
    live["spec"]["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    live["status"] = {"lastScheduleTime": "2026-01-01T00:00:00Z"}
    assert not drifted(desired, live)
    live["spec"]["suspend"] = True
    assert drifted(desired, live)


def test_server_normalized_quantities_are_no_drift() -> None:
    body = {
        **BODY,
        "spec": {
            **SPEC,
            "resources": {"requests": {"cpu": 2, "memory": "1Gi"}, "limits": {"cpu": "0.5"}},
        },
    }
    desired = desired_cronjob(body)
    live = replacement(desired, {"metadata": {"resourceVersion": "1"}})
    container = live["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {
        "requests": {"cpu": "2", "memory": "1073741824"},
        "limits": {"cpu": "500m"},
    }
    assert not drifted(desired, live)
    container["resources"]["limits"]["cpu"] = "600m"
    assert drifted(desired, live)
    assert not contains("Forbid", 1) and not contains(True, 1)


def test_contains_compares_lists_by_position_and_length() -> None:
    assert contains([{"a": 1, "b": 2}], [{"a": 1}])
    assert not contains([{"a": 1}, {"a": 2}], [{"a": 1}])
    assert not contains({"a": [1]}, {"a": 1})


# --- status --------------------------------------------------------------------------------


def _job(name: str, *, start: str, end: str | None = None, failed: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": start}
    if end and not failed:
        status |= {
            "completionTime": end,
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": end}],
        }
    elif end:
        status["conditions"] = [
            {
                "type": "Failed",
                "status": "True",
                "reason": "DeadlineExceeded",
                "lastTransitionTime": end,
            }
        ]
    else:
        status["active"] = 1
    return {"metadata": {"name": name}, "status": status}


def _observe(status: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    return with_run(status, run_from_job(job, []), job=job, now="2026-11-29T00:00:00Z")


def test_a_failure_is_counted_once_and_older_jobs_change_nothing() -> None:
    failed = _job("j-2", start="2026-11-29T10:00:00Z", end="2026-11-29T10:05:00Z", failed=True)
    status = _observe({}, _job("j-2", start="2026-11-29T10:00:00Z"))
    assert status["lastRun"]["phase"] == "Running" and status["consecutiveFailures"] == 0
    status = _observe(status, failed)
    assert status["consecutiveFailures"] == 1
    assert status["lastRun"]["durationSeconds"] == 300.0
    assert _observe(status, failed) == status  # a replay
    older = _job("j-1", start="2026-11-29T09:00:00Z", end="2026-11-29T09:01:00Z")
    assert _observe(status, older) == status  # an older Job seen late
    cond = {c["type"]: c for c in status["conditions"]}["LastRunSucceeded"]
    assert cond["reason"] == "DeadlineExceeded"
    newer = _job("j-3", start="2026-11-29T11:00:00Z", end="2026-11-29T11:00:30Z")
    status = _observe(status, newer)
    assert status["consecutiveFailures"] == 0
    assert status["lastSuccessfulTime"] == "2026-11-29T11:00:30Z"


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    first = reconciled_status({}, generation=1, cronjob_name="p", now="2026-01-01T00:00:00Z")
    again = reconciled_status(first, generation=2, cronjob_name="p", now="2026-01-02T00:00:00Z")
    (ready,) = again["conditions"]
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert ready["observedGeneration"] == 2
    bad = invalid_status(again, generation=3, reason="X", message="m", now="2026-01-03T00:00:00Z")
    assert bad["conditions"][0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"


def test_merge_patch_round_trips() -> None:
    old = {"a": 1, "b": {"c": 2, "d": [1, 2]}, "e": {"f": 1}}
    new = {"b": {"c": 3, "d": [1]}, "e": {"f": 1}, "g": None}
    patch = merge_patch(old, new)
    assert patch == {"a": None, "b": {"c": 3, "d": [1]}, "g": None}
    assert merge_patch(new, new) == {}


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (409, TransientApiError),
        (429, TransientApiError),
        (503, TransientApiError),
        (403, ApiCallError),
        (422, ApiCallError),
    ],
)
def test_api_errors_are_classified(status: int, kind: type) -> None:
    assert isinstance(classify_api_error(ApiException(status=status), doing="x"), kind)


def test_kopf_errors_is_the_one_mapping() -> None:
    with pytest.raises(kopf.TemporaryError) as temporary, kopf_errors(retry_delay=7):
        raise TransientApiError("busy", status=503)
    assert temporary.value.delay == 7
    with pytest.raises(kopf.PermanentError), kopf_errors(retry_delay=7):
        raise InvalidSpecError("InvalidSchedule", "bad")
    with pytest.raises(kopf.PermanentError), kopf_errors(retry_delay=7):
        raise ApiCallError("forbidden", status=403)
    with pytest.raises(ConnectionResetError), kopf_errors(retry_delay=7):
        raise ConnectionResetError  # anything else: kopf's own retry with backoff


def test_operator_config_demands_one_scope() -> None:
    from ematix_flow_operator import OperatorConfig

    with pytest.raises(ConfigurationError, match="--all-namespaces"):
        OperatorConfig()
    with pytest.raises(ConfigurationError):
        OperatorConfig(namespaces=("a",), all_namespaces=True)


# --- packaging -----------------------------------------------------------------------------


def test_the_operator_folder_never_shadows_the_stdlib_operator_module() -> None:
    repo = Path(__file__).resolve().parents[2]
    assert not (repo / "operator" / "__init__.py").exists()
    # Even with the repository first on the path (a script run from its root), the
    # folder is only a namespace portion, which loses to the standard library module.
    spec = importlib.machinery.PathFinder.find_spec("operator", [str(repo), *sys.path])
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).name == "operator.py"
    assert Path(spec.origin).parent != repo / "operator"
    assert importlib.util.find_spec("ematix_flow_operator") is not None


def test_the_kind_script_is_valid_bash_and_checks_the_status() -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "e2e-kind.sh"
    assert os.access(script, os.X_OK)
    result = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    for step in (
        "kind create cluster",
        "kind load docker-image",
        "helm upgrade --install",
        "flow export-k8s",
        "kubectl apply -f",
        'get emtxpipelines -n "$NAMESPACE" -o wide',
        'type=="LastRunSucceeded"',
    ):
        assert step in text, step
