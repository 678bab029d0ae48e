"""`flow export-k8s` logic: pipeline records → EmatixPipeline manifests (pure)."""

from __future__ import annotations

import dataclasses
import re

import pytest
from _k8s_testing import load_all, validate_custom, validate_strict

from ematix_flow._errors import ConfigurationError, DefinitionError
from ematix_flow._k8s import model
from ematix_flow._k8s.cronjob import render_cronjob
from ematix_flow._k8s.export import (
    PipelineRecord,
    TargetRecord,
    export_pipelines,
    resource_name,
    secret_name,
)

pytestmark = pytest.mark.k8s

IMAGE = "registry.example/team/pipelines:1.4.0"

# Spec §2: one SCD2 target, read and written through the default target connection.
SPEC_2 = PipelineRecord(
    name="customer_sync",
    schedule="0 * * * *",
    connections=("warehouse",),
    targets=(TargetRecord("warehouse.customer_dim", "scd2", ("customer_id",)),),
)
# Spec §4: cross-DB, source `oltp`, target `warehouse`.
SPEC_4 = PipelineRecord(
    name="sync_user_purchase_features",
    schedule="0 */6 * * *",
    connections=("oltp", "warehouse"),
    targets=(
        TargetRecord("features.user_purchase_features_v1", "scd2", ("user_id", "period_start")),
    ),
)
UNSCHEDULED = PipelineRecord(name="adhoc_backfill", schedule=None, connections=("warehouse",))


def _export(*records: PipelineRecord, **kw):
    return export_pipelines(records, module="my_pipelines", image=IMAGE, **kw)


def test_spec_examples_become_valid_resources() -> None:
    export = _export(SPEC_4, SPEC_2, UNSCHEDULED, namespace="data")
    docs = load_all(export.yaml())
    assert [d["metadata"]["name"] for d in docs] == ["customer-sync", "sync-user-purchase-features"]
    for doc in docs:
        validate_custom(doc)
        assert doc["metadata"]["namespace"] == "data"
        # What the operator will do with it validates against the official schemas too.
        validate_strict(render_cronjob(doc["metadata"]["name"], "data", "uid-1", doc["spec"]))
    customer, features = docs
    assert customer["spec"]["pipeline"] == "customer_sync"
    assert customer["spec"]["module"] == "my_pipelines"
    assert customer["spec"]["image"] == IMAGE
    assert customer["spec"]["schedule"] == "0 * * * *"
    assert customer["spec"]["concurrencyPolicy"] == "Forbid"
    assert customer["spec"]["targets"] == [
        {"table": "warehouse.customer_dim", "mode": "scd2", "keys": ["customer_id"]}
    ]
    assert features["spec"]["connections"] == [
        {"name": "oltp", "secretName": "ematix-flow-oltp", "key": "dsn"},
        {"name": "warehouse", "secretName": "ematix-flow-warehouse", "key": "dsn"},
    ]
    assert export.skipped == ("adhoc_backfill",)


def test_a_schedule_s_time_zone_is_the_resource_s_time_zone() -> None:
    paris = dataclasses.replace(SPEC_2, timezone="Europe/Paris")
    (doc,) = load_all(_export(paris).yaml())
    validate_custom(doc)
    assert doc["spec"]["timeZone"] == "Europe/Paris"
    validate_strict(render_cronjob(doc["metadata"]["name"], "data", "uid-1", doc["spec"]))
    (utc,) = load_all(_export(SPEC_2).yaml())
    assert "timeZone" not in utc["spec"]  # UTC, the CronJob's default


def test_secrets_to_create_are_listed_once_per_connection() -> None:
    export = _export(SPEC_2, SPEC_4)
    assert [(s.name, s.key, s.connection, s.pipelines) for s in export.secrets] == [
        ("ematix-flow-oltp", "dsn", "oltp", ("sync_user_purchase_features",)),
        (
            "ematix-flow-warehouse",
            "dsn",
            "warehouse",
            ("customer_sync", "sync_user_purchase_features"),
        ),
    ]


def test_output_is_deterministic_whatever_the_input_order() -> None:
    first = _export(SPEC_2, SPEC_4, namespace="data").yaml()
    second = _export(SPEC_4, SPEC_2, namespace="data").yaml()
    assert first == second
    assert first.encode() == _export(SPEC_2, SPEC_4, namespace="data").yaml().encode()
    files = _export(SPEC_2, SPEC_4).files()
    assert sorted(files) == ["customer-sync.yaml", "sync-user-purchase-features.yaml"]
    assert files == _export(SPEC_4, SPEC_2).files()


def test_namespace_is_left_to_kubectl_when_not_given() -> None:
    (doc,) = load_all(_export(SPEC_2).yaml())
    assert "namespace" not in doc["metadata"]


def test_secret_name_template_is_applied_and_validated() -> None:
    export = _export(SPEC_4, secret_name_template="db-{connection}-credentials")
    (doc,) = load_all(export.yaml())
    assert [c["secretName"] for c in doc["spec"]["connections"]] == [
        "db-oltp-credentials",
        "db-warehouse-credentials",
    ]
    assert secret_name("ematix-flow-{connection}", "Alt_Warehouse") == "ematix-flow-alt-warehouse"
    for bad in ("static-name", "{connection}_UPPER", "x-{connection}-{pipeline}", "{0}"):
        with pytest.raises(ConfigurationError, match="template"):
            _export(SPEC_4, secret_name_template=bad)


def test_connections_that_map_to_one_secret_are_refused() -> None:
    one = PipelineRecord("one", "@daily", connections=("alt-wh",))
    two = PipelineRecord("two", "@daily", connections=("alt_wh",))
    with pytest.raises(ConfigurationError, match="Secret 'ematix-flow-alt-wh'"):
        _export(one, two)
    both = PipelineRecord("both", "@daily", connections=("alt-wh", "alt_wh"))
    with pytest.raises(DefinitionError, match="EMATIX_FLOW_DSN_ALT_WH"):
        _export(both)


@pytest.mark.parametrize(
    ("record", "module", "message"),
    [
        (PipelineRecord("p", "*/5 * * * * *"), "m", "schedule '*/5 * * * * *' is not one"),
        (PipelineRecord("p", "@every 5m"), "m", "@hourly"),
        (PipelineRecord("p", "@daily"), "my-module", "--module 'my-module' is not"),
        (PipelineRecord("sync now!", "@daily"), "m", "its name has characters"),
    ],
)
def test_what_kubernetes_cannot_run_is_explained(
    record: PipelineRecord, module: str, message: str
) -> None:
    with pytest.raises(DefinitionError, match=re.escape(message)) as info:
        export_pipelines([record], module=module, image=IMAGE)
    assert repr(record.name) in str(info.value)


def test_pipelines_that_map_to_one_resource_name_are_refused() -> None:
    with pytest.raises(DefinitionError, match="customer-sync"):
        _export(SPEC_2, PipelineRecord("customer-sync", "@daily"))


@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        ("customer_sync", "customer-sync"),
        ("Orders.Daily", "orders-daily"),
        ("__x__", "x"),
        ("a" * 80, None),
    ],
)
def test_resource_names_are_valid_dns_names(pipeline: str, expected: str | None) -> None:
    name = resource_name(pipeline)
    if expected is not None:
        assert name == expected
    assert len(name) <= 52
    validate_custom(
        model.EmatixPipeline(
            metadata={"name": name},
            spec=model.EmatixPipelineSpec(
                pipeline=pipeline, module="m", image=IMAGE, schedule="@daily"
            ),
        ).to_k8s()
    )


def test_header_says_how_it_was_made_and_holds_no_values() -> None:
    text = _export(SPEC_2).yaml()
    assert text.startswith("# EmatixPipeline resources generated by `flow export-k8s")
    assert "--module my_pipelines" in text.splitlines()[0]
    assert "postgres" not in text
