"""The operator under hostile specs and a misbehaving API server, against the strict
emulator of ``tests/operator`` (its harness reused: ``Cluster``, ``OperatorThread``).

What tests/operator already proves is not repeated here (a 503 on CronJob create, a
409 on the status patch, dropped watches, a restart after a reconcile, one bad spec at a
time). Added: every bad spec of the hostile corpus at once beside good resources; a 409
and 5xx answers on the CronJob create *and* replace; a failed Event post (best effort:
dropped, blocking nothing); a CronJob
created by a previous instance that died before writing the status (adopted, not
duplicated); a CronJob of the same name owned by someone else (refused, left alone).
"""

from __future__ import annotations

import pytest
from hostile_inputs import of_kind
from operator_harness import Cluster, OperatorThread, conditions, ready, spec, wait_for

from ematix_flow._k8s.model import KIND

pytestmark = pytest.mark.k8s


def _cronjobs(cluster: Cluster, ns: str) -> list[str]:
    return sorted(c["metadata"]["name"] for c in cluster.list("batch/v1/cronjobs", ns))


def test_every_hostile_spec_is_reported_and_none_blocks_the_good_ones(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    cases = of_kind("operator")
    good = []
    for i, case in enumerate(cases):
        bad = {k: v for k, v in spec(**case.spec).items() if v is not None}
        cluster.create_pipeline(ns, case.id, bad)
        if i % 5 == 0:  # good resources between the bad ones
            good.append(f"good-{i}")
            cluster.create_pipeline(ns, good[-1], spec())
    for case in cases:
        status = ready(cluster, ns, case.id, "False")
        condition = conditions(status)["Ready"]
        assert condition["reason"] == case.match, (case.id, condition)
        assert "spec." in condition["message"], condition  # names the field at fault
        wait_for(
            lambda case=case: any(
                e["reason"] == case.match and e["type"] == "Warning"
                for e in cluster.events(ns, case.id)
            ),
            what=f"a Warning Event on {case.id}",
        )
    for name in good:
        ready(cluster, ns, name)
    assert _cronjobs(cluster, ns) == sorted(good)
    assert operator_thread.error is None


def test_conflicts_and_server_errors_on_cronjob_writes_and_events_are_retried(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    cronjobs = f"/namespaces/{ns}/cronjobs"
    cluster.fail_next("POST", f"{cronjobs}$", status=409, times=1)
    cluster.fail_next("POST", f"{cronjobs}$", status=502, times=1)
    cluster.fail_next("POST", f"/namespaces/{ns}/events$", status=500, times=1)
    cluster.create_pipeline(ns, "shaky", spec())
    wait_for(lambda: cluster.cronjob(ns, "shaky"), what="the CronJob despite a 409 and a 502")
    ready(cluster, ns, "shaky")
    assert cluster.requests("POST", cronjobs) == 3

    # An update whose replace meets a 409 (someone changed it meanwhile) and a 503.
    writes = cluster.requests("PUT", f"{cronjobs}/shaky")
    cluster.fail_next("PUT", f"{cronjobs}/shaky$", status=409, times=1)
    cluster.fail_next("PUT", f"{cronjobs}/shaky$", status=503, times=1)
    cluster.patch_pipeline(ns, "shaky", {"schedule": "@hourly"})
    wait_for(
        lambda: (cj := cluster.cronjob(ns, "shaky")) and cj["spec"]["schedule"] == "@hourly",
        what="the update despite a 409 and a 503",
    )
    assert cluster.requests("PUT", f"{cronjobs}/shaky") - writes == 3
    assert _cronjobs(cluster, ns) == ["shaky"]
    assert cluster.requests("POST", cronjobs) == 3  # the update never created a second
    # Events are best effort: the one that met a 500 is logged and dropped, it blocks
    # nothing, and the next one is posted; the status carries the state either way.
    wait_for(
        lambda: any(e["reason"] == "CronJobUpdated" for e in cluster.events(ns, "shaky")),
        what="the CronJobUpdated Event after the failed Event post",
    )
    assert operator_thread.error is None


def test_cronjob_of_a_crashed_instance_is_adopted_not_duplicated(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    operator_thread.stop()
    try:
        cluster.create_pipeline(ns, "orphan", spec())
        body = cluster.pipeline(ns, "orphan")
        assert body is not None
        # What the previous instance had written before it died: the CronJob, with its
        # owner reference, but no status on the resource.
        from ematix_flow_operator.reconcile import desired_cronjob

        manifest = desired_cronjob(body)
        cluster.batch.create_namespaced_cron_job(ns, manifest)
    finally:
        operator_thread.start()
    posts = cluster.requests("POST", f"/namespaces/{ns}/cronjobs")
    ready(cluster, ns, "orphan")
    assert _cronjobs(cluster, ns) == ["orphan"]
    assert cluster.requests("POST", f"/namespaces/{ns}/cronjobs") == posts == 1
    assert operator_thread.error is None


def test_a_cronjob_owned_by_someone_else_is_refused_and_left_alone(
    cluster: Cluster, operator_thread: OperatorThread, ns: str
) -> None:
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "squatter", "namespace": ns, "labels": {"team": "other"}},
        "spec": {
            "schedule": "5 4 * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "x", "image": "busybox"}],
                        }
                    }
                }
            },
        },
    }
    cluster.batch.create_namespaced_cron_job(ns, foreign)
    before = cluster.cronjob(ns, "squatter")
    cluster.create_pipeline(ns, "squatter", spec())
    cluster.create_pipeline(ns, "neighbour", spec())
    status = ready(cluster, ns, "squatter", "False")
    assert conditions(status)["Ready"]["reason"] == "CronJobNameTaken"
    ready(cluster, ns, "neighbour")
    assert cluster.cronjob(ns, "squatter") == before
    assert not any(
        (r.get("kind"), r.get("name")) == (KIND, "squatter")
        for r in cluster.cronjob(ns, "squatter")["metadata"].get("ownerReferences") or ()
    )
    assert operator_thread.error is None
