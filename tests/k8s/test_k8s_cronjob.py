"""EmatixPipeline → CronJob rendering: the manifest the operator applies."""

from __future__ import annotations

import copy
from typing import Any

import pydantic
import pytest
from _k8s_testing import validate_strict

from ematix_flow._errors import ConfigurationError
from ematix_flow._exitcodes import CONFIG_ERROR, RUN_FAILED
from ematix_flow._k8s import model
from ematix_flow._k8s.cronjob import (
    CONTAINER_NAME,
    LABEL_PIPELINE,
    cronjob_name,
    render_cronjob,
    selector_labels,
)
from ematix_flow._k8s.summary import TERMINATION_MESSAGE_ENV
from ematix_flow.config import env_var_name

pytestmark = pytest.mark.k8s

UID = "8f14e45f-ceea-467f-a0e6-1c2d3e4f5a6b"

MINIMAL: dict[str, Any] = {
    "pipeline": "customer_sync",
    "module": "my_pipelines",
    "image": "registry.example/pipelines:1.0",
    "schedule": "0 * * * *",
}

MAXIMAL: dict[str, Any] = {
    **MINIMAL,
    "imagePullPolicy": "Always",
    "schedule": "*/10 6-22 * * 1-5",
    "timeZone": "Europe/Paris",
    "suspend": True,
    "concurrencyPolicy": "Replace",
    "startingDeadlineSeconds": 300,
    "backoffLimit": 4,
    "activeDeadlineSeconds": 3600,
    "ttlSecondsAfterFinished": 86400,
    "successfulJobsHistoryLimit": 5,
    "failedJobsHistoryLimit": 7,
    "resources": {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": 2, "memory": "1Gi", "ephemeral-storage": "2Gi"},
    },
    "serviceAccountName": "pipelines",
    "nodeSelector": {"kubernetes.io/os": "linux", "pool": "batch"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"},
        {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
    ],
    "env": [
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
        {"name": "REGION", "valueFrom": {"configMapKeyRef": {"name": "site", "key": "region"}}},
    ],
    "connections": [
        {"name": "warehouse", "secretName": "ematix-flow-warehouse"},
        {"name": "alt-warehouse", "secretName": "ematix-flow-alt-warehouse", "key": "url"},
        {"name": "oltp_main", "secretName": "shared-db", "key": "oltp"},
    ],
    "targets": [
        {"table": "warehouse.customer_dim", "mode": "scd2", "keys": ["customer_id"]},
        {"table": "features.user_purchase_features_v1", "mode": "merge"},
    ],
}


def _pod(cronjob: dict[str, Any]) -> dict[str, Any]:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _container(cronjob: dict[str, Any]) -> dict[str, Any]:
    (container,) = _pod(cronjob)["containers"]
    return container


def _env(cronjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in _container(cronjob)["env"]}


@pytest.mark.parametrize("spec", [MINIMAL, MAXIMAL], ids=["minimal", "maximal"])
def test_rendered_cronjob_validates_strictly(spec: dict[str, Any]) -> None:
    validate_strict(render_cronjob("customer-sync", "data", UID, spec))


def test_rendering_is_pure_and_accepts_the_model_or_its_dict() -> None:
    original = copy.deepcopy(MAXIMAL)
    from_dict = render_cronjob("customer-sync", "data", UID, MAXIMAL)
    from_model = render_cronjob(
        "customer-sync", "data", UID, model.EmatixPipelineSpec.from_k8s(MAXIMAL)
    )
    assert from_dict == from_model
    assert render_cronjob("customer-sync", "data", UID, MAXIMAL) == from_dict
    assert original == MAXIMAL


def test_a_spec_that_does_not_fit_the_model_raises() -> None:
    with pytest.raises(pydantic.ValidationError, match="schedule"):
        render_cronjob("x", "data", UID, {**MINIMAL, "schedule": "every hour"})


def test_image_falls_back_to_the_operators_default() -> None:
    no_image = {k: v for k, v in MINIMAL.items() if k != "image"}
    cronjob = render_cronjob("c", "data", UID, no_image, default_image="reg/default:2")
    assert _container(cronjob)["image"] == "reg/default:2"
    own = render_cronjob("c", "data", UID, MINIMAL, default_image="reg/default:2")
    assert _container(own)["image"] == MINIMAL["image"]
    with pytest.raises(ConfigurationError, match="data/c names no image"):
        render_cronjob("c", "data", UID, no_image)


def test_owner_reference_points_at_the_resource() -> None:
    meta = render_cronjob("customer-sync", "data", UID, MINIMAL)["metadata"]
    assert meta["name"] == "customer-sync"
    assert meta["namespace"] == "data"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "ematix.io/v1alpha1",
            "kind": "EmatixPipeline",
            "name": "customer-sync",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_labels_on_cronjob_jobs_and_pods() -> None:
    cronjob = render_cronjob("customer-sync", "data", UID, MINIMAL)
    for labels in (
        cronjob["metadata"]["labels"],
        cronjob["spec"]["jobTemplate"]["metadata"]["labels"],
        cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
    ):
        assert labels[LABEL_PIPELINE] == "customer_sync"
        assert labels["app.kubernetes.io/name"] == "ematix-flow"
        assert labels["app.kubernetes.io/instance"] == "customer-sync"
        assert labels["app.kubernetes.io/managed-by"] == "ematix-flow-operator"
        assert selector_labels("customer-sync").items() <= labels.items()


def test_command_runs_the_pipeline_from_its_module() -> None:
    container = _container(render_cronjob("customer-sync", "data", UID, MINIMAL))
    assert container["name"] == CONTAINER_NAME
    assert container["command"] == ["flow", "run", "customer_sync", "--module", "my_pipelines"]
    assert container["image"] == "registry.example/pipelines:1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_each_connection_is_a_dsn_variable_from_its_secret_key() -> None:
    env = _env(render_cronjob("customer-sync", "data", UID, MAXIMAL))
    assert env["EMATIX_FLOW_DSN_WAREHOUSE"]["valueFrom"] == {
        "secretKeyRef": {"name": "ematix-flow-warehouse", "key": "dsn"}
    }
    assert env["EMATIX_FLOW_DSN_ALT_WAREHOUSE"]["valueFrom"] == {
        "secretKeyRef": {"name": "ematix-flow-alt-warehouse", "key": "url"}
    }
    assert env["EMATIX_FLOW_DSN_OLTP_MAIN"]["valueFrom"] == {
        "secretKeyRef": {"name": "shared-db", "key": "oltp"}
    }
    assert not any("value" in e for n, e in env.items() if n.startswith("EMATIX_FLOW_DSN"))


@pytest.mark.parametrize(
    "connection", ["warehouse", "alt-warehouse", "oltp_main", "Mixed-Case_2", "9lives"]
)
def test_variable_names_follow_the_connection_registry(connection: str) -> None:
    spec = {**MINIMAL, "connections": [{"name": connection, "secretName": "s"}]}
    env = _env(render_cronjob("x", "data", UID, spec))
    dsn_vars = [n for n in env if n.startswith("EMATIX_FLOW_DSN")]
    assert dsn_vars == [env_var_name(connection)]
    assert dsn_vars[0] == "EMATIX_FLOW_DSN_" + connection.upper().replace("-", "_")


def test_scheduling_fields_are_mapped() -> None:
    spec = render_cronjob("customer-sync", "data", UID, MAXIMAL)["spec"]
    assert spec["schedule"] == "*/10 6-22 * * 1-5"
    assert spec["timeZone"] == "Europe/Paris"
    assert spec["suspend"] is True
    assert spec["concurrencyPolicy"] == "Replace"
    assert spec["startingDeadlineSeconds"] == 300
    assert spec["successfulJobsHistoryLimit"] == 5
    assert spec["failedJobsHistoryLimit"] == 7
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 4
    assert job["activeDeadlineSeconds"] == 3600
    assert job["ttlSecondsAfterFinished"] == 86400


def test_defaults_forbid_concurrency_and_leave_optional_fields_out() -> None:
    spec = render_cronjob("customer-sync", "data", UID, MINIMAL)["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["suspend"] is False
    for absent in ("timeZone", "startingDeadlineSeconds"):
        assert absent not in spec
    job = spec["jobTemplate"]["spec"]
    assert "activeDeadlineSeconds" not in job and "ttlSecondsAfterFinished" not in job
    assert "resources" not in _container(render_cronjob("c", "data", UID, MINIMAL))


def test_suspend_toggles_only_suspend() -> None:
    running = render_cronjob("c", "data", UID, MINIMAL)
    suspended = render_cronjob("c", "data", UID, {**MINIMAL, "suspend": True})
    assert suspended["spec"].pop("suspend") is True
    assert running["spec"].pop("suspend") is False
    assert suspended == running


def test_resources_and_pod_placement() -> None:
    cronjob = render_cronjob("customer-sync", "data", UID, MAXIMAL)
    assert _container(cronjob)["resources"] == MAXIMAL["resources"]
    pod = _pod(cronjob)
    assert pod["serviceAccountName"] == "pipelines"
    assert "automountServiceAccountToken" not in pod
    assert pod["nodeSelector"] == MAXIMAL["nodeSelector"]
    assert pod["tolerations"] == MAXIMAL["tolerations"]
    env = _env(cronjob)
    assert env["LOG_LEVEL"] == {"name": "LOG_LEVEL", "value": "debug"}
    assert env["REGION"]["valueFrom"] == {"configMapKeyRef": {"name": "site", "key": "region"}}


def test_restricted_security_context_with_writable_tmp() -> None:
    cronjob = render_cronjob("customer-sync", "data", UID, MINIMAL)
    pod = _pod(cronjob)
    container = _container(cronjob)
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mount["name"]]
    assert _env(cronjob)["HOME"]["value"] == "/tmp"


def test_termination_message_and_fail_fast_on_configuration_errors() -> None:
    cronjob = render_cronjob("customer-sync", "data", UID, MINIMAL)
    container = _container(cronjob)
    path = container["terminationMessagePath"]
    assert _env(cronjob)[TERMINATION_MESSAGE_ENV]["value"] == path
    rules = cronjob["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    fail_job = [r for r in rules if r["action"] == "FailJob"]
    assert len(fail_job) == 1
    on_exit = fail_job[0]["onExitCodes"]
    assert on_exit["containerName"] == CONTAINER_NAME
    assert on_exit["operator"] == "In"
    assert int(CONFIG_ERROR) in on_exit["values"]
    assert int(RUN_FAILED) not in on_exit["values"], "a failed run may succeed on retry"


def test_long_names_are_shortened_deterministically_and_stay_valid() -> None:
    long_name = "a-very-long-pipeline-resource-name-that-goes-on-and-on-forever"
    long_pipeline = "p_" + "x" * 80
    cronjob = render_cronjob(long_name, "data", UID, {**MINIMAL, "pipeline": long_pipeline})
    name = cronjob["metadata"]["name"]
    assert len(name) <= 52
    assert name == cronjob_name(long_name)
    assert name != cronjob_name(long_name + "-2")
    assert cronjob["metadata"]["ownerReferences"][0]["name"] == long_name
    assert len(cronjob["metadata"]["labels"][LABEL_PIPELINE]) <= 63
    assert _container(cronjob)["command"][2] == long_pipeline
    validate_strict(cronjob)


def test_variables_the_cronjob_sets_cannot_be_overridden_by_extra_env() -> None:
    own = set(_env(render_cronjob("c", "data", UID, MINIMAL)))
    assert own <= model._RESERVED_ENV
    for name in own:
        with pytest.raises(pydantic.ValidationError, match=name):
            model.EmatixPipelineSpec.from_k8s({**MINIMAL, "env": [{"name": name, "value": "x"}]})
