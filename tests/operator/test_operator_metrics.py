"""The operator's /metrics endpoint, scraped over HTTP while the real operator runs
against the emulated Kubernetes API; values parsed with prometheus_client's parser.

Jobs are driven to success and failure as the CronJob controller would; the figures
must follow the resource's status, survive a restart without counting a Job twice, and
disappear with a deleted resource.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest
from operator_harness import (
    Cluster,
    OperatorThread,
    finish_run,
    ready,
    spec,
    start_run,
    summary,
    wait_for,
)

from tests.metrics._prom import Samples, names, scrape, value

pytestmark = pytest.mark.k8s


def _url(runner: OperatorThread) -> str:
    assert runner.operator is not None and runner.operator.metrics.url
    return runner.operator.metrics.url


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def _target(name: str, status: str = "succeeded", **rows: Any) -> dict[str, Any]:
    return {"target": name, "mode": "merge", "status": status, **rows}


def _rows(samples: Samples, metric: str, ns: str, target: str) -> dict[str, float | None]:
    return {
        kind: value(samples, metric, namespace=ns, name="flows", target=target, kind=kind)
        for kind in ("inserted", "updated", "deleted", "unchanged", "expired")
    }


def _scrape_when(runner: OperatorThread, what: str, probe: Any) -> Samples:
    """Scrape until ``probe(samples)`` holds (the status reaches the operator by watch)."""

    def attempt() -> Samples | None:
        samples = scrape(_url(runner))
        return samples if probe(samples) else None

    return wait_for(attempt, what=what)


def _pending_job(cluster: Cluster, ns: str, cronjob: str, job: str) -> None:
    """A Job the CronJob controller created and nothing has started yet."""
    cj = cluster.cronjob(ns, cronjob)
    assert cj is not None
    template = cj["spec"]["jobTemplate"]
    cluster.batch.create_namespaced_job(
        ns,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": job,
                "labels": template["metadata"]["labels"],
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "CronJob",
                        "name": cronjob,
                        "uid": cj["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": template["spec"],
        },
    )


def test_runs_rows_failures_restart_and_deletion(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    cluster.create_pipeline(ns, "flows", spec(schedule="*/5 * * * *"))
    ready(cluster, ns, "flows")
    ident = {"namespace": ns, "name": "flows", "pipeline": "customer_sync"}
    samples = _scrape_when(
        operator_thread,
        "the new resource's series",
        lambda s: value(s, "ematix_flow_pipeline_ready", **ident) == 1,
    )
    assert value(samples, "ematix_flow_pipeline_suspended", **ident) == 0
    assert value(samples, "ematix_flow_pipeline_consecutive_failures", **ident) == 0
    nxt = value(samples, "ematix_flow_pipeline_next_schedule_timestamp_seconds", **ident)
    now = datetime.now(UTC).timestamp()
    assert nxt is not None and now < nxt <= now + 300 and nxt % 300 == 0
    # No run finished yet: no run series at all.
    assert "ematix_flow_pipeline_last_run_timestamp_seconds" not in names(samples, **ident)
    assert "ematix_flow_pipeline_last_success_timestamp_seconds" not in names(samples, **ident)

    # 1. A success with a merge and an incremental scd2 target.
    start_run(cluster, ns, "flows", "flows-1", at="2026-11-29T06:00:00Z")
    finish_run(
        cluster,
        ns,
        "flows-1",
        exit_code=0,
        message=summary(
            _target("wh.dim", rows_inserted=10, rows_updated=2, rows_deleted=1, rows_unchanged=5),
            _target(
                "wh.hist",
                rows_inserted=3,
                rows_expired=4,
                watermark_after="2026-11-29 05:59:00+00",
            ),
            ok=True,
        ),
        at="2026-11-29T06:01:30Z",
    )
    samples = _scrape_when(
        operator_thread,
        "the first run",
        lambda s: value(s, "ematix_flow_pipeline_last_run_success", **ident) == 1,
    )
    finished = _ts("2026-11-29T06:01:30Z")
    assert (
        value(samples, "ematix_flow_pipeline_last_success_timestamp_seconds", **ident) == finished
    )
    assert value(samples, "ematix_flow_pipeline_last_run_timestamp_seconds", **ident) == finished
    assert value(samples, "ematix_flow_pipeline_last_run_duration_seconds", **ident) == 90.0
    last = "ematix_flow_target_last_run_rows"
    total = "ematix_flow_target_rows_total"
    expected_dim = {"inserted": 10, "updated": 2, "deleted": 1, "unchanged": 5, "expired": 0}
    assert _rows(samples, last, ns, "wh.dim") == expected_dim
    assert _rows(samples, total, ns, "wh.dim") == expected_dim
    assert _rows(samples, total, ns, "wh.hist")["expired"] == 4
    watermark = "ematix_flow_target_watermark_timestamp_seconds"
    assert value(samples, watermark, namespace=ns, target="wh.hist") == _ts("2026-11-29T05:59:00Z")
    assert value(samples, watermark, namespace=ns, target="wh.dim") is None  # not incremental

    # 2. A failure: wh.dim rolled back, wh.hist not run. The last success stays.
    start_run(cluster, ns, "flows", "flows-2", at="2026-11-29T06:05:00Z")
    finish_run(
        cluster,
        ns,
        "flows-2",
        exit_code=1,
        message=summary(
            _target("wh.dim", "failed", error="relation app.people does not exist"),
            _target("wh.hist", "not_run"),
            ok=False,
        ),
        at="2026-11-29T06:05:07Z",
    )
    samples = _scrape_when(
        operator_thread,
        "the failed run",
        lambda s: value(s, "ematix_flow_pipeline_last_run_success", **ident) == 0,
    )
    assert value(samples, "ematix_flow_pipeline_consecutive_failures", **ident) == 1
    assert (
        value(samples, "ematix_flow_pipeline_last_success_timestamp_seconds", **ident) == finished
    )
    assert value(samples, "ematix_flow_pipeline_last_run_timestamp_seconds", **ident) == _ts(
        "2026-11-29T06:05:07Z"
    )
    assert value(samples, "ematix_flow_pipeline_last_run_duration_seconds", **ident) == 7.0
    assert set(_rows(samples, last, ns, "wh.dim").values()) == {0}
    assert _rows(samples, total, ns, "wh.dim") == expected_dim  # nothing added
    assert value(samples, watermark, namespace=ns, target="wh.hist") == _ts("2026-11-29T05:59:00Z")

    # 3. A second success adds to the totals.
    start_run(cluster, ns, "flows", "flows-3", at="2026-11-29T06:10:00Z")
    finish_run(
        cluster,
        ns,
        "flows-3",
        exit_code=0,
        message=summary(
            _target("wh.dim", rows_inserted=1, rows_updated=1, rows_unchanged=15),
            _target("wh.hist", rows_inserted=2, watermark_after="2026-11-29 06:09:00+00"),
            ok=True,
        ),
        at="2026-11-29T06:10:05Z",
    )
    samples = _scrape_when(
        operator_thread,
        "the third run",
        lambda s: value(s, "ematix_flow_pipeline_consecutive_failures", **ident) == 0,
    )
    totals = {"inserted": 11, "updated": 3, "deleted": 1, "unchanged": 20, "expired": 0}
    assert _rows(samples, total, ns, "wh.dim") == totals
    assert value(samples, watermark, namespace=ns, target="wh.hist") == _ts("2026-11-29T06:09:00Z")
    before = {k: v for k, v in samples.items() if ("namespace", ns) in k[1]}
    # The next Job exists but has not started: the old ones' replayed events must
    # neither be counted again nor take its place.
    _pending_job(cluster, ns, "flows", "flows-4")
    wait_for(
        lambda: (cluster.status(ns, "flows").get("lastRun") or {}).get("jobName") == "flows-4",
        what="the pending Job in lastRun",
    )

    # 4. A restart replays every Job and Pod as new: nothing is counted twice.
    operator_thread.restart()
    after = _scrape_when(
        operator_thread,
        "the restarted operator's series",
        lambda s: value(s, "ematix_flow_pipeline_ready", **ident) == 1,
    )
    wait_for(
        lambda: all(
            cluster.requests("GET", f"/namespaces/{ns}/jobs/flows-{i}") >= 2 for i in (1, 2, 3)
        ),
        what="the restarted operator re-reading every Job",
    )
    time.sleep(1.0)  # room for a wrong second count to reach the status and the endpoint
    after = scrape(_url(operator_thread))
    mine = {k: v for k, v in after.items() if ("namespace", ns) in k[1]}
    assert {k: v for k, v in mine.items() if "next_schedule" not in k[0]} == {
        k: v for k, v in before.items() if "next_schedule" not in k[0]
    }
    assert cluster.status(ns, "flows")["lastRun"]["jobName"] == "flows-4"

    # 5. Deleting the resource takes its series away.
    cluster.custom.delete_namespaced_custom_object(
        "ematix.io", "v1alpha1", ns, "emtxpipelines", "flows"
    )
    gone = _scrape_when(operator_thread, "the series gone", lambda s: not names(s, namespace=ns))
    assert value(gone, "ematix_flow_operator_pipelines") is not None


def test_invalid_spec_and_api_retries_are_counted(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    cluster.fail_next("POST", f"/namespaces/{ns}/cronjobs$", status=503)
    cluster.create_pipeline(ns, "good", spec())
    cluster.create_pipeline(ns, "bad", spec(schedule="61 * * * *"))
    ready(cluster, ns, "good")
    ready(cluster, ns, "bad", "False")
    samples = _scrape_when(
        operator_thread,
        "the invalid resource and the retried call",
        lambda s: (
            value(s, "ematix_flow_pipeline_ready", namespace=ns, name="bad") == 0
            and (value(s, "ematix_flow_operator_api_retries_total", reason="ServerError") or 0) >= 1
        ),
    )
    assert value(samples, "ematix_flow_pipeline_ready", namespace=ns, name="good") == 1
    errors = value(samples, "ematix_flow_operator_reconcile_errors_total", reason="InvalidSchedule")
    assert errors is not None and errors >= 1
    # An invalid resource has no schedule to be overdue against.
    assert "ematix_flow_pipeline_next_schedule_timestamp_seconds" not in names(
        samples, namespace=ns, name="bad"
    )


def test_suspended_resource_has_no_schedule_and_only_metrics_path_is_served(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    cluster.create_pipeline(ns, "paused", spec(suspend=True))
    ready(cluster, ns, "paused")
    samples = _scrape_when(
        operator_thread,
        "the suspended resource",
        lambda s: value(s, "ematix_flow_pipeline_suspended", namespace=ns, name="paused") == 1,
    )
    assert "ematix_flow_pipeline_next_schedule_timestamp_seconds" not in names(
        samples, namespace=ns
    )
    other = _url(operator_thread).replace("/metrics", "/elsewhere")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(other, timeout=5)
    assert err.value.code == 404
