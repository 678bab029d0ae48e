"""The real kopf operator against the emulated Kubernetes API, over HTTP.

Each test creates resources as a user would (``kubectl apply``), plays the CronJob
controller where needed (creating Jobs and Pods and their status), and waits for the
operator's effect on the stored objects.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from operator_harness import (
    RESOURCE,
    Cluster,
    OperatorThread,
    conditions,
    container_of,
    finish_run,
    ready,
    spec,
    start_run,
    summary,
    wait_for,
)

pytestmark = pytest.mark.k8s

# --- reconcile ---------------------------------------------------------------------------


def test_create_renders_the_owned_cronjob(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    created = cluster.create_pipeline(ns, "customers", spec())
    cj = wait_for(lambda: cluster.cronjob(ns, "customers"), what="the CronJob")
    assert cj["spec"]["schedule"] == "0 */6 * * *"
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    container = container_of(cj)
    assert container["command"] == ["flow", "run", "customer_sync", "--module", "my_pipelines"]
    assert container["image"] == "registry.example/pipelines:1.0"
    env = {e["name"]: e for e in container["env"]}
    assert env["EMATIX_FLOW_DSN_OLTP"]["valueFrom"]["secretKeyRef"] == {
        "name": "oltp-dsn",
        "key": "dsn",
    }
    assert env["EMATIX_FLOW_DSN_WAREHOUSE"]["valueFrom"]["secretKeyRef"] == {
        "name": "warehouse-dsn",
        "key": "url",
    }
    (owner,) = cj["metadata"]["ownerReferences"]
    assert owner["uid"] == created["metadata"]["uid"]
    assert (owner["kind"], owner["name"], owner["controller"]) == (
        "EmatixPipeline",
        "customers",
        True,
    )
    assert cj["metadata"]["labels"]["ematix.io/pipeline"] == "customer_sync"

    status = ready(cluster, ns, "customers")
    assert status["observedGeneration"] == 1
    assert status["cronJobName"] == "customers"
    assert status["consecutiveFailures"] == 0
    reasons = {e["reason"] for e in cluster.events(ns, "customers")}
    assert "CronJobCreated" in reasons
    # The API server filters what the operator watches besides its own resources.
    ours = "app.kubernetes.io/managed-by=ematix-flow-operator"
    for plural in ("cronjobs", "jobs", "pods"):
        assert cluster.watch_selectors(plural) == {ours}, plural
    # No finalizer: deleting the resource never waits for the operator.
    assert not cluster.pipeline(ns, "customers")["metadata"].get("finalizers")


def test_schedule_suspend_and_removed_fields_follow_the_spec(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    cluster.create_pipeline(ns, "orders", spec(startingDeadlineSeconds=300))
    first = wait_for(lambda: cluster.cronjob(ns, "orders"), what="the CronJob")
    assert first["spec"]["startingDeadlineSeconds"] == 300

    cluster.patch_pipeline(
        ns, "orders", {"schedule": "*/15 * * * *", "suspend": True, "startingDeadlineSeconds": None}
    )

    def followed() -> dict[str, Any] | None:
        cj = cluster.cronjob(ns, "orders")
        return cj if cj and cj["spec"]["schedule"] == "*/15 * * * *" else None

    cj = wait_for(followed, what="the new schedule on the CronJob")
    assert cj["spec"]["suspend"] is True
    assert "startingDeadlineSeconds" not in cj["spec"]
    assert cj["metadata"]["uid"] == first["metadata"]["uid"]  # updated in place
    wait_for(lambda: cluster.status(ns, "orders").get("observedGeneration") == 2, what="gen 2")

    cluster.patch_pipeline(ns, "orders", {"suspend": False, "timeZone": "Europe/Paris"})
    wait_for(
        lambda: (
            (cj := cluster.cronjob(ns, "orders"))
            and cj["spec"]["suspend"] is False
            and cj["spec"].get("timeZone") == "Europe/Paris"
        ),
        what="suspend lifted and the time zone set",
    )


def test_cronjob_deleted_or_edited_by_hand_is_restored(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    cluster.create_pipeline(ns, "restore", spec())
    original = wait_for(lambda: cluster.cronjob(ns, "restore"), what="the CronJob")
    ready(cluster, ns, "restore")

    cluster.batch.delete_namespaced_cron_job("restore", ns)
    restored = wait_for(
        lambda: (
            (cj := cluster.cronjob(ns, "restore"))
            and cj["metadata"]["uid"] != original["metadata"]["uid"]
            and cj
        ),
        what="the CronJob restored after deletion",
    )
    assert restored["spec"]["schedule"] == original["spec"]["schedule"]
    assert container_of(restored) == container_of(original)

    cluster.batch.patch_namespaced_cron_job(
        "restore",
        ns,
        {"spec": {"schedule": "* * * * *", "suspend": True}},
        _content_type="application/merge-patch+json",
    )
    wait_for(
        lambda: (
            (cj := cluster.cronjob(ns, "restore"))
            and cj["spec"]["schedule"] == "0 */6 * * *"
            and cj["spec"]["suspend"] is False
        ),
        what="the hand-edited CronJob restored",
    )
    reasons = {e["reason"] for e in cluster.events(ns, "restore")}
    assert {"CronJobCreated", "CronJobUpdated"} <= reasons

    # What the CronJob controller records reaches the resource's status.
    cluster.batch.patch_namespaced_cron_job_status(
        "restore",
        ns,
        {"status": {"lastScheduleTime": "2026-11-29T12:00:00Z"}},
        _content_type="application/merge-patch+json",
    )
    wait_for(
        lambda: cluster.status(ns, "restore").get("lastScheduleTime") == "2026-11-29T12:00:00Z",
        what="lastScheduleTime copied from the CronJob",
    )


def test_deleting_the_resource_is_clean(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    cluster.create_pipeline(ns, "gone", spec())
    wait_for(lambda: cluster.cronjob(ns, "gone"), what="the CronJob")
    ready(cluster, ns, "gone")
    cluster.custom.delete_namespaced_custom_object(
        "ematix.io", "v1alpha1", ns, "emtxpipelines", "gone"
    )
    # No finalizer holds it, and the owner reference takes the CronJob with it
    # (the emulator garbage-collects dependents by owner uid, as the real GC does).
    assert cluster.pipeline(ns, "gone") is None
    assert cluster.cronjob(ns, "gone") is None
    # The operator does not resurrect what the garbage collector removed.
    cluster.create_pipeline(ns, "witness", spec())
    wait_for(lambda: cluster.cronjob(ns, "witness"), what="a later resource reconciled")
    assert cluster.cronjob(ns, "gone") is None


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"schedule": "61 * * * *"}, "InvalidSchedule"),
        ({"schedule": "every day"}, "InvalidSchedule"),
        ({"timeZone": "Mars/Olympus_Mons"}, "UnknownTimeZone"),
        ({"connections": [{"name": "warehouse"}]}, "MissingSecretName"),
        ({"image": None}, "MissingImage"),
    ],
)
def test_invalid_resource_is_reported_and_does_not_block_others(
    cluster: Cluster,
    operator_thread: OperatorThread,
    ns: str,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    bad = {k: v for k, v in spec(**overrides).items() if v is not None}
    cluster.create_pipeline(ns, "bad", bad)
    status = ready(cluster, ns, "bad", "False")
    condition = conditions(status)["Ready"]
    assert condition["reason"] == reason
    assert condition["message"].startswith("spec.")
    wait_for(
        lambda: any(
            e["reason"] == reason and e["type"] == "Warning" for e in cluster.events(ns, "bad")
        ),
        what=f"a Warning Event {reason}",
    )
    assert cluster.cronjob(ns, "bad") is None

    # A valid resource created after it is reconciled all the same.
    cluster.create_pipeline(ns, "good", spec())
    wait_for(lambda: cluster.cronjob(ns, "good"), what="the valid resource's CronJob")
    ready(cluster, ns, "good")

    # Fixing the spec makes the bad one Ready.
    fixed = spec()
    for key in overrides:
        fixed.setdefault(key, None)  # null removes what the bad spec added
    cluster.patch_pipeline(ns, "bad", fixed)
    ready(cluster, ns, "bad")
    assert cluster.cronjob(ns, "bad") is not None
    assert operator_thread.error is None


# --- status write-back -------------------------------------------------------------------


def test_runs_are_written_back_to_the_status(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    cluster.create_pipeline(ns, "runs", spec())
    wait_for(lambda: cluster.cronjob(ns, "runs"), what="the CronJob")
    ready(cluster, ns, "runs")

    # A successful run with a two-target summary in the termination message.
    start_run(cluster, ns, "runs", "runs-29000000", at="2026-11-29T06:00:00Z")
    wait_for(
        lambda: (cluster.status(ns, "runs").get("lastRun") or {}).get("phase") == "Running",
        what="lastRun Running",
    )
    finish_run(
        cluster,
        ns,
        "runs-29000000",
        exit_code=0,
        message=summary(
            {
                "target": "warehouse.customer_dim",
                "mode": "merge",
                "status": "succeeded",
                "rows_inserted": 10,
                "rows_updated": 2,
                "rows_deleted": 0,
            },
            {
                "target": "features.orders_v1",
                "mode": "scd2",
                "status": "succeeded",
                "rows_inserted": 7,
                "rows_updated": 0,
                "rows_deleted": 1,
            },
            ok=True,
        ),
        at="2026-11-29T06:01:30Z",
    )
    status = wait_for(
        lambda: (s := cluster.status(ns, "runs")).get("lastSuccessfulTime") and s,
        what="a successful run in the status",
    )
    run = status["lastRun"]
    assert run["jobName"] == "runs-29000000"
    assert run["phase"] == "Succeeded"
    assert run["durationSeconds"] == 90.0
    assert run["exitCode"] == 0
    assert run["targets"] == [
        {
            "target": "warehouse.customer_dim",
            "mode": "merge",
            "status": "succeeded",
            "rowsInserted": 10,
            "rowsUpdated": 2,
            "rowsDeleted": 0,
        },
        {
            "target": "features.orders_v1",
            "mode": "scd2",
            "status": "succeeded",
            "rowsInserted": 7,
            "rowsUpdated": 0,
            "rowsDeleted": 1,
        },
    ]
    assert status["lastSuccessfulTime"] == "2026-11-29T06:01:30Z"
    assert status["lastScheduleTime"] == "2026-11-29T06:00:00Z"
    assert status["consecutiveFailures"] == 0
    succeeded = conditions(status)["LastRunSucceeded"]
    assert succeeded["status"] == "True"
    assert "17 inserted, 2 updated, 1 deleted" in succeeded["message"]

    # Two failed runs: counted once each, however often their events replay.
    for i, job in enumerate(("runs-29000360", "runs-29000720"), start=1):
        start_run(cluster, ns, "runs", job, at=f"2026-11-29T{6 + 6 * i:02d}:00:00Z")
        finish_run(
            cluster,
            ns,
            job,
            exit_code=1,
            message=summary(
                {
                    "target": "warehouse.customer_dim",
                    "mode": "merge",
                    "status": "failed",
                    "error": "duplicate key value violates unique constraint",
                },
                ok=False,
            ),
            at=f"2026-11-29T{6 + 6 * i:02d}:00:45Z",
        )
        status = wait_for(
            lambda job=job: (
                (s := cluster.status(ns, "runs"))
                and (s.get("lastRun") or {}).get("jobName") == job
                and s["lastRun"]["phase"] == "Failed"
                and s
            ),
            what=f"the failure of {job}",
        )
        assert status["consecutiveFailures"] == i
        # A replay of the same Job (a label touched, a watch restarted) counts nothing.
        reads = cluster.requests("GET", f"/namespaces/{ns}/jobs/{job}")
        cluster.batch.patch_namespaced_job(
            job,
            ns,
            {"metadata": {"annotations": {"touched": "yes"}}},
            _content_type="application/merge-patch+json",
        )
        wait_for(
            lambda job=job, reads=reads: (
                cluster.requests("GET", f"/namespaces/{ns}/jobs/{job}") > reads
            ),
            what="the replayed Job event handled",
        )
        time.sleep(0.2)  # let its (idempotent) status write land, if it made one
        assert cluster.status(ns, "runs")["consecutiveFailures"] == i
    failed = conditions(status)["LastRunSucceeded"]
    assert (failed["status"], failed["reason"]) == ("False", "RunFailed")
    assert "duplicate key value" in failed["message"]
    assert status["lastRun"]["targets"][0]["error"].startswith("duplicate key value")
    assert status["lastSuccessfulTime"] == "2026-11-29T06:01:30Z"
    assert status["lastScheduleTime"] == "2026-11-29T18:00:00Z"


def test_configuration_error_exit_code_is_its_own_reason(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    cluster.create_pipeline(ns, "conf", spec())
    wait_for(lambda: cluster.cronjob(ns, "conf"), what="the CronJob")
    start_run(cluster, ns, "conf", "conf-1", at="2026-11-29T06:00:00Z")
    finish_run(
        cluster,
        ns,
        "conf-1",
        exit_code=3,
        message="error: unknown connection 'oltp'",
        at="2026-11-29T06:00:05Z",
    )
    status = wait_for(
        lambda: (s := cluster.status(ns, "conf")).get("consecutiveFailures") == 1 and s,
        what="the failed run",
    )
    failed = conditions(status)["LastRunSucceeded"]
    assert failed["reason"] == "ConfigurationError"
    assert "unknown connection 'oltp'" in failed["message"]
    assert status["lastRun"]["targets"] == []


def test_restart_keeps_one_cronjob_and_the_status(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    cluster.create_pipeline(ns, "durable", spec())
    cj = wait_for(lambda: cluster.cronjob(ns, "durable"), what="the CronJob")
    start_run(cluster, ns, "durable", "durable-1", at="2026-11-29T06:00:00Z")
    finish_run(
        cluster, ns, "durable-1", exit_code=1, message=summary(ok=False), at="2026-11-29T06:00:09Z"
    )
    before = wait_for(
        lambda: (s := cluster.status(ns, "durable")).get("consecutiveFailures") == 1 and s,
        what="the failed run",
    )

    operator_thread.restart()
    cluster.create_pipeline(ns, "after-restart", spec())
    wait_for(lambda: cluster.cronjob(ns, "after-restart"), what="the restarted operator at work")
    wait_for(
        lambda: cluster.requests("GET", f"/namespaces/{ns}/cronjobs/durable") >= 2, what="resume"
    )

    assert [c["metadata"]["name"] for c in cluster.list("batch/v1/cronjobs", ns)] == [
        "durable",
        "after-restart",
    ]
    assert cluster.cronjob(ns, "durable")["metadata"]["uid"] == cj["metadata"]["uid"]
    assert cluster.requests("POST", f"/namespaces/{ns}/cronjobs") == 2  # one per resource
    assert cluster.status(ns, "durable") == before


def test_transient_api_errors_are_retried(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    cluster.fail_next("POST", f"/namespaces/{ns}/cronjobs$", status=503, times=2)
    cluster.fail_next("PATCH", f"/namespaces/{ns}/emtxpipelines/flaky/status$", status=409)
    cluster.create_pipeline(ns, "flaky", spec())
    wait_for(lambda: cluster.cronjob(ns, "flaky"), what="the CronJob despite two 503s")
    ready(cluster, ns, "flaky")
    assert cluster.requests("POST", f"/namespaces/{ns}/cronjobs") == 3


def test_dropped_watches_are_reopened_through_errors(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    cluster.create_pipeline(ns, "steady", spec())
    ready(cluster, ns, "steady")
    watches = cluster.watches("emtxpipelines")
    # Every stream ends, and the first attempts to reopen the resource's watch fail.
    cluster.fail_next("GET", "/emtxpipelines$", status=500, times=2)
    assert cluster.drop_watches() > 0
    wait_for(lambda: cluster.watches("emtxpipelines") > watches + 2, what="the watch reopened")
    cluster.create_pipeline(ns, "after-drop", spec())
    wait_for(lambda: cluster.cronjob(ns, "after-drop"), what="reconciled after the drop")
    cluster.patch_pipeline(ns, "steady", {"schedule": "@daily"})
    wait_for(
        lambda: (cj := cluster.cronjob(ns, "steady")) and cj["spec"]["schedule"] == "@daily",
        what="an update after the drop",
    )
    # Nothing was handled twice.
    reasons = [e["reason"] for e in cluster.events(ns, "steady")]
    assert reasons.count("CronJobCreated") == 1
    assert cluster.requests("POST", f"/namespaces/{ns}/cronjobs") == 2


def test_every_printer_column_shows_a_value_after_a_run(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    """`kubectl get emtxpipelines -o wide` has a value in every status column once a run
    ran (spec columns are the user's; their defaults come from the API server)."""
    from ematix_flow._k8s.crd import PRINTER_COLUMNS

    cluster.create_pipeline(ns, "columns", spec())
    wait_for(lambda: cluster.cronjob(ns, "columns"), what="the CronJob")
    start_run(cluster, ns, "columns", "columns-1", at="2026-11-29T06:00:00Z")
    finish_run(
        cluster, ns, "columns-1", exit_code=0, message=summary(ok=True), at="2026-11-29T06:00:03Z"
    )
    wait_for(lambda: cluster.status(ns, "columns").get("lastSuccessfulTime"), what="the run")
    body = cluster.get(RESOURCE, ns, "columns")
    shown = {}
    for column in PRINTER_COLUMNS:
        if not column["jsonPath"].startswith(".status."):
            continue
        value: Any = body
        for part in column["jsonPath"].lstrip(".").split("."):
            value = (value or {}).get(part)
        shown[column["name"]] = value
    assert None not in shown.values(), shown
    assert shown.keys() == {"Last Run", "Result", "Failures"}
    assert shown["Result"] == "Succeeded"
    assert shown["Last Run"] == "2026-11-29T06:00:00Z"
    assert shown["Failures"] == 0
