"""The EmatixPipeline model and the CRD generated from it."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from _k8s_testing import REPO_ROOT, crd_schema, custom_errors, load_all, validate_strict

from ematix_flow._k8s import crd as crd_module
from ematix_flow._k8s import model

pytestmark = pytest.mark.k8s


def _resource(**spec: Any) -> dict[str, Any]:
    base = {
        "pipeline": "customer_sync",
        "module": "my_pipelines",
        "image": "registry.example/pipelines:1.0",
        "schedule": "0 * * * *",
    }
    return {
        "apiVersion": "ematix.io/v1alpha1",
        "kind": "EmatixPipeline",
        "metadata": {"name": "customer-sync", "namespace": "data"},
        "spec": {**base, **spec},
    }


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node of the CRD with its path."""
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key in ("properties",):
            for name, sub in node.get(key, {}).items():
                out += _walk(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                out += _walk(node[key], f"{path}[{key}]")
        for i, sub in enumerate(node.get("anyOf", [])):
            out += _walk(sub, f"{path}|{i}")
    return out


# --------------------------------------------------------------------------- files


def test_generated_files_match_the_model() -> None:
    for rel, content in crd_module.generated_files().items():
        on_disk = (REPO_ROOT / rel).read_text(encoding="utf-8")
        assert on_disk == content, f"{rel} is stale: run `python -m ematix_flow._k8s.crd`"
    assert crd_module.main(["--check", "--root", str(REPO_ROOT)]) == 0


def test_check_reports_a_file_that_differs_and_regeneration_fixes_it(tmp_path, capsys) -> None:
    assert crd_module.main(["--root", str(tmp_path)]) == 0
    crd_file = tmp_path / crd_module.CRD_FILE
    crd_file.write_text(crd_file.read_text().replace("Forbid", "Allow"))
    assert crd_module.main(["--check", "--root", str(tmp_path)]) == 1
    assert str(crd_module.CRD_FILE) in capsys.readouterr().out
    assert crd_module.main(["--root", str(tmp_path)]) == 0
    assert crd_module.main(["--check", "--root", str(tmp_path)]) == 0


def test_crd_file_validates_strictly_against_the_official_schema() -> None:
    (crd,) = load_all((REPO_ROOT / crd_module.CRD_FILE).read_text())
    validate_strict(crd)
    assert crd == crd_module.build_crd()


# --------------------------------------------------------------------------- CRD shape


def test_crd_names_make_kubectl_get_emtxpipelines_resolve() -> None:
    crd = crd_module.build_crd()
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{names['plural']}.{crd['spec']['group']}"
    assert "emtxpipelines" in [names["plural"], *names.get("shortNames", [])]
    assert names["kind"] == "EmatixPipeline"
    assert crd["spec"]["group"] == "ematix.io"
    assert crd["spec"]["scope"] == "Namespaced"


def test_crd_version_has_status_subresource_and_printer_columns() -> None:
    (version,) = crd_module.build_crd()["spec"]["versions"]
    assert version["name"] == model.VERSION
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    for name in ("Schedule", "Suspend", "Last Run", "Result", "Age"):
        assert name in columns
        assert columns[name].get("priority", 0) == 0, f"{name} is hidden by default"
    assert columns["Suspend"]["type"] == "boolean"
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"


def test_printer_columns_point_at_fields_of_the_schema() -> None:
    schema = crd_schema()
    for column in crd_module.PRINTER_COLUMNS:
        parts = column["jsonPath"].strip(".").split(".")
        if parts[0] == "metadata":
            continue
        node = schema
        for part in parts:
            assert part in node["properties"], column["jsonPath"]
            node = node["properties"][part]


def test_schema_is_structural() -> None:
    for path, node in _walk(crd_schema()):
        assert "$ref" not in node and "$defs" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert "title" not in node, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("x-kubernetes-int-or-string"):
            continue
        if "|" not in path.rsplit(".", 1)[-1]:
            assert "type" in node, f"{path} has no type"
        for branch in node.get("anyOf", []):
            assert branch != {"type": "null"}, path


def test_schema_carries_defaults_and_list_map_keys() -> None:
    spec = crd_schema()["properties"]["spec"]
    props = spec["properties"]
    assert set(spec["required"]) == {"pipeline", "module", "schedule"}
    assert props["concurrencyPolicy"]["default"] == "Forbid"
    assert props["concurrencyPolicy"]["enum"] == ["Allow", "Forbid", "Replace"]
    assert props["suspend"]["default"] is False
    assert props["connections"]["items"]["properties"]["key"]["default"] == "dsn"
    assert props["connections"]["x-kubernetes-list-map-keys"] == ["name"]
    assert props["backoffLimit"]["minimum"] == 0
    assert props["targets"]["items"]["properties"]["mode"]["enum"] == [
        "append",
        "merge",
        "scd1",
        "scd2",
    ]
    status = crd_schema()["properties"]["status"]["properties"]
    for field in (
        "observedGeneration",
        "conditions",
        "cronJobName",
        "lastScheduleTime",
        "lastRun",
        "lastSuccessfulTime",
        "consecutiveFailures",
    ):
        assert field in status
    last_run = status["lastRun"]["properties"]
    assert last_run["startTime"]["format"] == "date-time"
    assert set(last_run["targets"]["items"]["properties"]) >= {
        "target",
        "mode",
        "status",
        "rowsInserted",
        "rowsUpdated",
        "rowsDeleted",
        "error",
    }


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "schedule",
    ["0 * * * *", "*/15 2-6 * * 1-5", "0 0 1 JAN,JUL ?", "@hourly", "@daily", "5  4 * * sun"],
)
def test_cron_pattern_accepts_kubernetes_schedules(schedule: str) -> None:
    assert custom_errors(_resource(schedule=schedule)) == []
    model.EmatixPipelineSpec.from_k8s(_resource(schedule=schedule)["spec"])


@pytest.mark.parametrize(
    "schedule", ["", "0 * * *", "0 * * * * *", "@every 5m", "hourly", "0 * * * *; rm -rf /"]
)
def test_cron_pattern_rejects_malformed_schedules(schedule: str) -> None:
    errors = custom_errors(_resource(schedule=schedule))
    assert errors and errors[0].startswith("spec.schedule"), errors
    with pytest.raises(pydantic.ValidationError):
        model.EmatixPipelineSpec.from_k8s(_resource(schedule=schedule)["spec"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("concurrencyPolicy", "Sometimes"),
        ("imagePullPolicy", "Maybe"),
        ("backoffLimit", -1),
        ("successfulJobsHistoryLimit", -2),
        ("activeDeadlineSeconds", 0),
        ("startingDeadlineSeconds", -5),
        ("module", "my-pipelines"),
        ("timeZone", "Europe Paris"),
        ("connections", [{"name": "wh", "secretName": "Not_A_Dns_Name"}]),
        ("connections", [{"secretName": "ematix-flow-wh"}]),
        ("targets", [{"table": "wh.t", "mode": "upsert"}]),
    ],
)
def test_schema_and_model_reject_the_same_bad_values(field: str, value: Any) -> None:
    errors = custom_errors(_resource(**{field: value}))
    assert errors and errors[0].startswith(f"spec.{field}"), errors
    with pytest.raises(pydantic.ValidationError):
        model.EmatixPipelineSpec.from_k8s(_resource(**{field: value})["spec"])


def test_missing_required_fields_are_rejected() -> None:
    for field in ("pipeline", "module", "schedule"):
        doc = _resource()
        del doc["spec"][field]
        assert any(f"'{field}' is a required property" in e for e in custom_errors(doc))
        with pytest.raises(pydantic.ValidationError, match=field):
            model.EmatixPipelineSpec.from_k8s(doc["spec"])


def test_model_fills_the_same_defaults_as_the_schema() -> None:
    spec = model.EmatixPipelineSpec.from_k8s(
        _resource(connections=[{"name": "warehouse", "secretName": "ematix-flow-warehouse"}])[
            "spec"
        ]
    )
    props = crd_schema()["properties"]["spec"]["properties"]
    dumped = spec.to_k8s()
    for name, prop in props.items():
        if "default" in prop:
            assert dumped[name] == prop["default"], name
    assert dumped["connections"] == [
        {"name": "warehouse", "secretName": "ematix-flow-warehouse", "key": "dsn"}
    ]


def test_model_round_trips_through_its_camel_case_form() -> None:
    doc = _resource(
        timeZone="Europe/Paris",
        suspend=True,
        resources={"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi", "cpu": 2}},
        env=[{"name": "LOG_LEVEL", "value": "debug"}],
        targets=[{"table": "warehouse.customer_dim", "mode": "scd2", "keys": ["customer_id"]}],
    )
    resource = model.EmatixPipeline.from_k8s(doc)
    assert resource.spec.time_zone == "Europe/Paris"
    assert resource.spec.resources.limits == {"memory": "1Gi", "cpu": 2}
    again = model.EmatixPipeline.from_k8s(resource.to_k8s())
    assert again == resource
    assert custom_errors(resource.to_k8s()) == []


def test_status_model_validates_against_the_status_schema() -> None:
    status = model.EmatixPipelineStatus(
        observed_generation=3,
        conditions=[
            model.Condition(type="Ready", status="True", reason="CronJobApplied"),
            model.Condition(
                type="LastRunSucceeded", status="False", reason="RunFailed", message="boom"
            ),
        ],
        cron_job_name="customer-sync",
        last_schedule_time="2026-01-01T10:00:00Z",
        last_run=model.LastRun(
            job_name="customer-sync-29000000",
            phase="Failed",
            duration_seconds=1.5,
            targets=[
                model.TargetRunSummary(
                    target="warehouse.customer_dim", status="failed", rows_inserted=0
                )
            ],
        ),
        consecutive_failures=2,
    )
    doc = {**_resource(), "status": status.to_k8s()}
    assert custom_errors(doc) == []
    assert doc["status"]["lastRun"]["targets"][0]["rowsInserted"] == 0
    assert doc["status"]["lastScheduleTime"] == "2026-01-01T10:00:00Z"
    bad = {**_resource(), "status": {**status.to_k8s(), "consecutiveFailures": -1}}
    assert custom_errors(bad)


def test_model_rejects_connections_that_collide_on_one_variable() -> None:
    spec = _resource(
        connections=[
            {"name": "alt-warehouse", "secretName": "a"},
            {"name": "alt_warehouse", "secretName": "b"},
        ]
    )["spec"]
    with pytest.raises(pydantic.ValidationError, match="EMATIX_FLOW_DSN_ALT_WAREHOUSE"):
        model.EmatixPipelineSpec.from_k8s(spec)


@pytest.mark.parametrize(
    "env",
    [
        [{"name": "EMATIX_FLOW_DSN_WAREHOUSE", "value": "postgresql://x"}],
        [{"name": "HOME", "value": "/root"}],
        [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
        [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        [{"name": "A", "valueFrom": {}}],
    ],
)
def test_model_rejects_extra_env_that_conflicts(env: list[dict[str, Any]]) -> None:
    with pytest.raises(pydantic.ValidationError):
        model.EmatixPipelineSpec.from_k8s(_resource(env=env)["spec"])


def test_model_is_frozen() -> None:
    spec = model.EmatixPipelineSpec.from_k8s(_resource()["spec"])
    with pytest.raises(pydantic.ValidationError):
        spec.suspend = True  # type: ignore[misc]
