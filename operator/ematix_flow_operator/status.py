"""The EmatixPipeline's status as pure functions of what the operator observed.

Every function takes the current ``status`` dict (camelCase, as stored) and returns the
new one; the handlers write the difference (:func:`merge_patch`). Nothing here does
I/O, so replays are harmless: a Job seen twice, or an older Job seen after a newer one,
changes nothing the second time — a run is counted (in ``consecutiveFailures``, in
``lastFinishedRun`` and in the per-target row totals ``targetTotals``) exactly once, when
the status first sees its Job finished. The status is the only memory: an operator that
restarts reads the totals back and never counts a Job twice.

::

    run = run_from_job(job, pods)           # Job + its pods → status.lastRun
    status = with_run(status, run, job=job, now=now_iso())  # counted once per Job
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ematix_flow._exitcodes import CONFIG_ERROR
from ematix_flow._k8s.cronjob import CONTAINER_NAME
from ematix_flow._k8s.model import CONDITION_LAST_RUN_SUCCEEDED, CONDITION_READY
from ematix_flow._k8s.summary import parse_termination_summary, status_targets

__all__ = [
    "SCHEDULED_ANNOTATION",
    "invalid_status",
    "merge_patch",
    "now_iso",
    "reconciled_status",
    "run_from_job",
    "scheduled_time",
    "with_run",
    "with_schedule_time",
    "with_totals",
]

#: Set by the CronJob controller (Kubernetes ≥ 1.28) on each Job it creates.
SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
TERMINAL = frozenset({"Succeeded", "Failed"})
_CONDITION_ORDER = (CONDITION_READY, CONDITION_LAST_RUN_SUCCEEDED)


def now_iso() -> str:
    """The current time as the API server writes timestamps (RFC 3339, UTC, seconds)."""
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``.

    >>> merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 2}, "e": 5})
    {'a': None, 'b': {'d': None}, 'e': 5}
    """
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif key not in old or before != value:
            patch[key] = copy.deepcopy(value)
    return dict(sorted(patch.items()))


def _with_condition(
    status: Mapping[str, Any],
    *,
    type: str,
    value: str,
    reason: str,
    message: str,
    now: str,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    previous = {c.get("type"): c for c in status.get("conditions") or ()}
    old = previous.get(type, {})
    condition: dict[str, Any] = {
        "type": type,
        "status": value,
        "reason": reason,
        "message": message,
        # The transition time moves only when the status itself changes.
        "lastTransitionTime": old.get("lastTransitionTime") if old.get("status") == value else now,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    elif "observedGeneration" in old:
        condition["observedGeneration"] = old["observedGeneration"]
    previous[type] = condition
    order = {name: i for i, name in enumerate(_CONDITION_ORDER)}
    return sorted(previous.values(), key=lambda c: (order.get(c.get("type"), 99), c.get("type")))


def reconciled_status(
    status: Mapping[str, Any], *, generation: int | None, cronjob_name: str, now: str
) -> dict[str, Any]:
    """``status`` once the CronJob for ``generation`` of the spec is in place."""
    new = dict(status)
    if generation is not None:
        new["observedGeneration"] = generation
    new["cronJobName"] = cronjob_name
    new["conditions"] = _with_condition(
        status,
        type=CONDITION_READY,
        value="True",
        reason="CronJobReady",
        message=f"CronJob {cronjob_name} is in place",
        now=now,
        generation=generation,
    )
    new.setdefault("consecutiveFailures", 0)
    return new


def invalid_status(
    status: Mapping[str, Any], *, generation: int | None, reason: str, message: str, now: str
) -> dict[str, Any]:
    """``status`` when the spec cannot be rendered: Ready=False with the reason."""
    new = dict(status)
    if generation is not None:
        new["observedGeneration"] = generation
    new["conditions"] = _with_condition(
        status,
        type=CONDITION_READY,
        value="False",
        reason=reason,
        message=message,
        now=now,
        generation=generation,
    )
    new.setdefault("consecutiveFailures", 0)
    return new


def _job_phase(job: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """Phase of a Job and the condition that decided it (empty when still going)."""
    job_status = job.get("status") or {}
    for cond in job_status.get("conditions") or ():
        if cond.get("status") != "True":
            continue
        if cond.get("type") in {"Complete", "SuccessCriteriaMet"}:
            return "Succeeded", cond
        if cond.get("type") in {"Failed", "FailureTarget"}:
            return "Failed", cond
    if job_status.get("active") or job_status.get("startTime"):
        return "Running", {}
    return "Pending", {}


def _terminated(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The terminated state of the ``flow`` container in the latest pod that has one."""
    ordered = sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
    for pod in reversed(ordered):
        for cs in (pod.get("status") or {}).get("containerStatuses") or ():
            terminated = (cs.get("state") or {}).get("terminated")
            if cs.get("name") == CONTAINER_NAME and terminated:
                return terminated
    return {}


def _totals_message(targets: Sequence[Mapping[str, Any]]) -> str:
    ins = sum(t.get("rowsInserted") or 0 for t in targets)
    upd = sum(t.get("rowsUpdated") or 0 for t in targets)
    dele = sum(t.get("rowsDeleted") or 0 for t in targets)
    noun = "target" if len(targets) == 1 else "targets"
    return f"{len(targets)} {noun}: {ins} inserted, {upd} updated, {dele} deleted"


def run_from_job(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``status.lastRun`` for ``job``, with figures from its pods' termination message."""
    meta = job.get("metadata") or {}
    job_status = job.get("status") or {}
    phase, decided_by = _job_phase(job)
    run: dict[str, Any] = {"jobName": meta.get("name"), "phase": phase}
    start = job_status.get("startTime")
    end = job_status.get("completionTime")
    if phase == "Failed" and not end:
        end = decided_by.get("lastTransitionTime")
    if start:
        run["startTime"] = start
    if end and phase in TERMINAL:
        run["completionTime"] = end
        began, ended = _parse_time(start), _parse_time(end)
        if began and ended:
            run["durationSeconds"] = max(0.0, (ended - began).total_seconds())
    terminated = _terminated(pods)
    if "exitCode" in terminated:
        run["exitCode"] = int(terminated["exitCode"])
    summary = parse_termination_summary(terminated.get("message")) if terminated else None
    if summary is not None:
        run["targets"] = status_targets(summary)
        if summary.get("truncated"):
            run["truncated"] = True
    if phase == "Failed":
        failed = [t for t in run.get("targets", ()) if t.get("error")]
        message = (
            "; ".join(f"{t['target']}: {t['error']}" for t in failed[:3])
            or (summary or {}).get("message")
            or decided_by.get("message")
            or (f"the pod exited with code {run['exitCode']}" if "exitCode" in run else "")
            or decided_by.get("reason")
            or "the Job failed"
        )
        run["message"] = str(message)[:1024]
    run.setdefault("targets", [])
    return run


def scheduled_time(job: Mapping[str, Any]) -> str | None:
    """When the CronJob scheduled ``job`` (its annotation), if it says."""
    return ((job.get("metadata") or {}).get("annotations") or {}).get(SCHEDULED_ANNOTATION)


def _is_older(run: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether ``run`` belongs to a Job older than the one ``current`` describes."""
    new_start, cur_start = _parse_time(run.get("startTime")), _parse_time(current.get("startTime"))
    if new_start and cur_start:
        return new_start < cur_start
    return False


def with_schedule_time(status: Mapping[str, Any], scheduled: str | None) -> dict[str, Any]:
    """``status`` with ``lastScheduleTime`` moved forward to ``scheduled`` (never back)."""
    new = dict(status)
    when, current = _parse_time(scheduled), _parse_time(status.get("lastScheduleTime"))
    if when and (current is None or when > current):
        new["lastScheduleTime"] = scheduled
    return new


def _failure_reason(run: Mapping[str, Any], job: Mapping[str, Any]) -> str:
    if run.get("exitCode") == int(CONFIG_ERROR):
        return "ConfigurationError"
    _, decided_by = _job_phase(job)
    if decided_by.get("reason") == "DeadlineExceeded":
        return "DeadlineExceeded"
    return "RunFailed"


_ROW_FIELDS = ("rowsInserted", "rowsUpdated", "rowsDeleted", "rowsUnchanged", "rowsExpired")


def with_totals(
    totals: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``status.targetTotals`` after adding the rows of one finished run's ``targets``.

    Only targets that succeeded add rows (a failed target's transaction rolled back) and
    move the watermark. Targets no longer in the run keep their totals.

    >>> totals = with_totals([{"target": "wh.a", "rowsInserted": 2}],
    ...                      [{"target": "wh.a", "status": "succeeded", "rowsInserted": 3}])
    >>> totals[0]["rowsInserted"], totals[0]["rowsExpired"]
    (5, 0)
    """
    out = {str(t.get("target")): dict(t) for t in totals if t.get("target")}
    for t in targets:
        if t.get("status") != "succeeded" or not t.get("target"):
            continue
        entry = out.setdefault(str(t["target"]), {"target": str(t["target"])})
        for key in _ROW_FIELDS:
            entry[key] = int(entry.get(key) or 0) + int(t.get(key) or 0)
        if t.get("watermark") is not None:
            entry["watermark"] = t["watermark"]
    for entry in out.values():
        for key in _ROW_FIELDS:
            entry.setdefault(key, 0)
    return [out[name] for name in sorted(out)]


def _counted(run: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether ``run`` (finished) was already counted, or is older than one that was."""
    for seen in (status.get("lastRun") or {}, status.get("lastFinishedRun") or {}):
        if seen.get("jobName") == run.get("jobName") and seen.get("phase") in TERMINAL:
            return True
    finished = status.get("lastFinishedRun") or {}
    return _is_older(run, finished)


def with_run(
    status: Mapping[str, Any],
    run: Mapping[str, Any],
    *,
    job: Mapping[str, Any],
    now: str,
) -> dict[str, Any]:
    """``status`` after observing ``run`` (from :func:`run_from_job` of ``job``).

    A Job other than the one in ``status.lastRun`` that is older than it, or than
    ``lastFinishedRun``, or is ``lastFinishedRun``, changes nothing (replayed events of
    old Jobs, e.g. after an operator restart, while a new Job has not started yet). A
    finished Job is counted once: the first time the status sees it finished, a success
    resets ``consecutiveFailures`` and sets ``lastSuccessfulTime``, a failure adds one;
    either way it becomes ``lastFinishedRun`` and its targets' rows are added to
    ``targetTotals``.
    """
    current = status.get("lastRun") or {}
    finished = status.get("lastFinishedRun") or {}
    if current.get("jobName") not in (None, run.get("jobName")) and (
        _is_older(run, current)
        or _is_older(run, finished)
        or run.get("jobName") == finished.get("jobName")
    ):
        return dict(status)
    new = with_schedule_time(status, scheduled_time(job))
    new["lastRun"] = dict(run)
    new.setdefault("consecutiveFailures", 0)
    if run.get("phase") not in TERMINAL or _counted(run, status):
        return new
    targets = run.get("targets") or []
    new["lastFinishedRun"] = dict(run)
    new["targetTotals"] = with_totals(status.get("targetTotals") or (), targets)
    if run["phase"] == "Succeeded":
        new["consecutiveFailures"] = 0
        new["lastSuccessfulTime"] = run.get("completionTime") or now
        new["conditions"] = _with_condition(
            status,
            type=CONDITION_LAST_RUN_SUCCEEDED,
            value="True",
            reason="Succeeded",
            message=f"Job {run['jobName']} succeeded; {_totals_message(targets)}",
            now=now,
        )
    else:
        new["consecutiveFailures"] = int(status.get("consecutiveFailures") or 0) + 1
        new["conditions"] = _with_condition(
            status,
            type=CONDITION_LAST_RUN_SUCCEEDED,
            value="False",
            reason=_failure_reason(run, job),
            message=f"Job {run['jobName']} failed: {run.get('message') or 'no details'}",
            now=now,
        )
    return new
