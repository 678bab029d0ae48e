"""The kopf handlers: thin translations between watch events and the operator's work.

:func:`build_registry` returns a fresh ``kopf.OperatorRegistry`` for one
:class:`~ematix_flow_operator.config.OperatorConfig` — no module-level state, so a
test can run, stop and restart operators in one process. What is registered:

========================================  ==============================================
EmatixPipeline create / update(spec) /    render the CronJob, create or replace it,
resume                                    status Ready (or Ready=False + Event if invalid)
EmatixPipeline events                     remember which resources exist (for re-checks)
CronJob events (ours, by label)           deleted or edited by hand → restored at once;
                                          ``lastScheduleTime`` copied to the status
Job and Pod events (ours, by label)       the run's outcome → ``status.lastRun`` & co.
every ``recheck_interval`` seconds         each known resource re-checked (CronJob and
                                          latest Job), in case an event was missed
startup / cleanup                         the Prometheus endpoint (``metrics_endpoint``)
                                          started and stopped
========================================  ==============================================

No handler needs a finalizer (no deletion handler, no kopf timer or daemon on the
resource): deleting an EmatixPipeline never waits for the operator, and owner
references let Kubernetes remove its CronJob, Jobs and Pods.

The work itself is in :class:`Operator`; kopf's handlers only unpack arguments and run
it inside :func:`~ematix_flow_operator.errors.kopf_errors`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from ematix_flow._k8s.cronjob import selector_labels
from ematix_flow._k8s.model import GROUP, KIND, PLURAL, VERSION
from ematix_flow_operator.config import OperatorConfig
from ematix_flow_operator.errors import (
    InvalidSpecError,
    OperatorError,
    TransientApiError,
    kopf_errors,
)
from ematix_flow_operator.kube import Kube, connection_info, load_configuration
from ematix_flow_operator.metrics import OperatorMetrics
from ematix_flow_operator.reconcile import desired_cronjob, drifted, owner_of, replacement
from ematix_flow_operator.status import (
    invalid_status,
    merge_patch,
    now_iso,
    reconciled_status,
    run_from_job,
    with_run,
    with_schedule_time,
)

__all__ = ["MANAGED_BY", "Operator", "build_registry"]

#: Label selecting the CronJobs, Jobs and Pods this operator renders.
MANAGED_BY = {"app.kubernetes.io/managed-by": "ematix-flow-operator"}
_JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
_STATUS_ATTEMPTS = 5

logger = logging.getLogger("ematix_flow_operator")


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


class Operator:
    """The operator's work, shared by the handlers of one process.

    Holds the config, the API client (made at login), the metrics and one lock per
    resource, so the handlers of different watches (the resource, its CronJob, Jobs and
    Pods) never interleave their read-modify-write of the same status.
    """

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.kube: Kube | None = None
        self.metrics = OperatorMetrics()
        self._known: set[tuple[str, str]] = set()
        self._locks: dict[tuple[str, str], threading.RLock] = {}
        self._locks_guard = threading.Lock()

    # --- which resources exist (for the periodic re-check) ------------------------------

    def remember(self, namespace: str, name: str, *, exists: bool) -> None:
        with self._locks_guard:
            if exists:
                self._known.add((namespace, name))
            else:
                self._known.discard((namespace, name))
                self._locks.pop((namespace, name), None)

    def known(self) -> list[tuple[str, str]]:
        with self._locks_guard:
            return sorted(self._known)

    # --- plumbing -----------------------------------------------------------------------

    def login(self) -> kopf.ConnectionInfo:
        configuration = load_configuration(self.config.kubeconfig)
        # On re-login (expired credentials) handlers may still hold the old client:
        # replace it, never close it under them.
        self.kube = Kube(configuration, on_transient=self.metrics.api_retry)
        return connection_info(configuration)

    @property
    def api(self) -> Kube:
        if self.kube is None:
            raise TransientApiError("not logged in to the Kubernetes API yet")
        return self.kube

    def _lock(self, namespace: str, name: str) -> threading.RLock:
        with self._locks_guard:
            return self._locks.setdefault((namespace, name), threading.RLock())

    def _event(self, body: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        # An Event that cannot be recorded is not worth failing (or retrying) the work.
        try:
            self.api.post_event(body, type=type, reason=reason, message=message, now=now_iso())
        except OperatorError as exc:
            logger.warning("could not record the Event %s: %s", reason, exc)

    def write_status(
        self, namespace: str, name: str, compute: Callable[[Mapping[str, Any]], dict[str, Any]]
    ) -> None:
        """Read the resource, compute its new status, write the difference.

        The write is conditional on the ``resourceVersion`` read; on a conflict it reads
        and computes again. Nothing is written when nothing changes.
        """
        with self._lock(namespace, name):
            for _ in range(_STATUS_ATTEMPTS):
                body = self.api.get_pipeline(namespace, name)
                if body is None or _meta(body).get("deletionTimestamp"):
                    return
                old = body.get("status") or {}
                patch = merge_patch(old, compute(old))
                if not patch:
                    return
                try:
                    self.api.patch_pipeline_status(
                        namespace, name, patch, resource_version=_meta(body)["resourceVersion"]
                    )
                    return
                except TransientApiError as exc:
                    if exc.status != 409:
                        raise
            raise TransientApiError(
                f"the status of EmatixPipeline {namespace}/{name} kept changing while "
                f"being written ({_STATUS_ATTEMPTS} conflicts in a row)",
                status=409,
            )

    # --- the resource → its CronJob -----------------------------------------------------

    def reconcile(self, body: Mapping[str, Any], *, cause: str) -> None:
        """Render the resource's CronJob, apply it, report Ready (or why not)."""
        meta = _meta(body)
        namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
        with self._lock(namespace, name):
            try:
                desired = desired_cronjob(body, default_image=self.config.default_image)
                action = self._apply(desired, body)
            except InvalidSpecError as exc:
                reason, message = exc.reason, exc.message
                self.write_status(
                    namespace,
                    name,
                    lambda old: invalid_status(
                        old, generation=generation, reason=reason, message=message, now=now_iso()
                    ),
                )
                self._event(body, "Warning", reason, message)
                raise
            cronjob = desired["metadata"]["name"]
            if action is not None:
                logger.info("CronJob %s/%s %s (%s)", namespace, cronjob, action, cause)
                self._event(
                    body,
                    "Normal",
                    f"CronJob{action.capitalize()}",
                    f"CronJob {cronjob} {action} ({cause})",
                )
            self.write_status(
                namespace,
                name,
                lambda old: reconciled_status(
                    old, generation=generation, cronjob_name=cronjob, now=now_iso()
                ),
            )

    def _apply(self, desired: dict[str, Any], body: Mapping[str, Any]) -> str | None:
        """Create or replace the CronJob; what was done, or None if it was as rendered."""
        meta = desired["metadata"]
        actual = self.api.get_cronjob(meta["namespace"], meta["name"])
        if actual is None:
            self.api.create_cronjob(desired)
            return "created"
        owner = owner_of(actual, KIND)
        if owner is None or owner.get("name") != _meta(body)["name"]:
            raise InvalidSpecError(
                "CronJobNameTaken",
                f"a CronJob named {meta['name']!r} already exists in namespace "
                f"{meta['namespace']!r} and is not owned by this EmatixPipeline: rename "
                "the resource or delete that CronJob",
            )
        if not drifted(desired, actual):
            return None
        if self.api.replace_cronjob(replacement(desired, actual)) is None:
            self.api.create_cronjob(desired)  # deleted between the read and the write
            return "created"
        return "updated"

    def on_cronjob_event(self, event_type: str | None, cronjob: Mapping[str, Any]) -> None:
        """A CronJob of ours changed: restore it if it was deleted or edited by hand."""
        ref = owner_of(cronjob, KIND)
        namespace = _meta(cronjob).get("namespace")
        if ref is None or not namespace:
            return
        body = self.api.get_pipeline(namespace, ref["name"])
        if body is None or _meta(body).get("deletionTimestamp"):
            return  # the resource is gone: the CronJob goes with it
        if _meta(body).get("uid") != ref.get("uid"):
            return  # a CronJob of an older resource of the same name
        if event_type == "DELETED":
            self.reconcile(body, cause="restored after deletion")
            return
        try:
            desired = desired_cronjob(body, default_image=self.config.default_image)
        except InvalidSpecError:
            return  # the resource's own handler reports it
        if drifted(desired, cronjob):
            self.reconcile(body, cause="restored after an edit")
        scheduled = (cronjob.get("status") or {}).get("lastScheduleTime")
        if scheduled:
            self.write_status(
                namespace, ref["name"], lambda old: with_schedule_time(old, scheduled)
            )

    # --- Jobs and Pods → status ---------------------------------------------------------

    def _pipeline_of_job(self, job: Mapping[str, Any]) -> str | None:
        namespace = _meta(job)["namespace"]
        candidates: list[str] = []
        cj_ref = owner_of(job, "CronJob")
        if cj_ref is not None:
            cronjob = self.api.get_cronjob(namespace, cj_ref["name"])
            ref = owner_of(cronjob, KIND) if cronjob is not None else None
            if ref is not None:
                return str(ref["name"])
            candidates.append(str(cj_ref["name"]))
        instance = (_meta(job).get("labels") or {}).get("app.kubernetes.io/instance")
        if instance:
            candidates.insert(0, instance)
        for name in candidates:
            if self.api.get_pipeline(namespace, name) is not None:
                return name
        return None

    def sync_job(self, namespace: str, job_name: str) -> None:
        """Write the outcome of the Job ``job_name`` into its resource's status."""
        job = self.api.get_job(namespace, job_name)
        if job is None:
            return
        name = self._pipeline_of_job(job)
        if name is None:
            return
        selector = _selector(selector_labels(name))
        pods = [
            pod for pod in self.api.list_pods(namespace, selector) if _job_of_pod(pod) == job_name
        ]
        run = run_from_job(job, pods)
        self.write_status(namespace, name, lambda old: with_run(old, run, job=job, now=now_iso()))

    def recheck(self, namespace: str, name: str) -> None:
        """The periodic safety net: CronJob as rendered, latest Job reflected."""
        body = self.api.get_pipeline(namespace, name)
        if body is None:
            self.remember(namespace, name, exists=False)
            return
        if _meta(body).get("deletionTimestamp"):
            return
        try:
            desired = desired_cronjob(body, default_image=self.config.default_image)
        except InvalidSpecError:
            return  # already reported by the resource's handler; nothing to restore
        actual = self.api.get_cronjob(namespace, desired["metadata"]["name"])
        if actual is None or drifted(desired, actual):
            self.reconcile(body, cause="restored by the periodic check")
        cronjob = desired["metadata"]["name"]
        jobs = [
            job
            for job in self.api.list_jobs(namespace, _selector(selector_labels(name)))
            if (owner_of(job, "CronJob") or {}).get("name") == cronjob
        ]
        if jobs:
            latest = max(
                jobs, key=lambda j: (_meta(j).get("creationTimestamp") or "", _meta(j)["name"])
            )
            self.sync_job(namespace, _meta(latest)["name"])

    async def recheck_forever(self) -> None:
        """Every ``recheck_interval`` seconds, re-check every known resource."""
        while True:
            await asyncio.sleep(self.config.recheck_interval)
            if self.kube is None:
                continue
            for namespace, name in self.known():
                try:
                    await asyncio.to_thread(self.recheck, namespace, name)
                except OperatorError as exc:
                    logger.warning("re-check of %s/%s failed: %s", namespace, name, exc)
                except Exception:
                    logger.exception("re-check of %s/%s failed", namespace, name)


def _job_of_pod(pod: Mapping[str, Any]) -> str | None:
    ref = owner_of(pod, "Job")
    if ref is not None:
        return str(ref["name"])
    labels = _meta(pod).get("labels") or {}
    return next((labels[k] for k in _JOB_NAME_LABELS if k in labels), None)


def tune_settings(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf settings every deployment of this operator wants."""
    # Keep kopf's bookkeeping under our own group, in annotations only (the CRD's
    # status schema has no room for kopf's progress records).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Re-open watches regularly: a silently dropped connection heals within minutes.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.peering.priority = config.priority
    # Watch only our CronJobs, Jobs and Pods: the API server filters, not the operator
    # (the handlers' own label filters stay as a second line).
    selector = _selector(MANAGED_BY)
    for resource in (("batch", "cronjobs"), ("batch", "jobs"), ("v1", "pods")):
        settings.watching.label_selectors[resource] = selector


def build_registry(
    config: OperatorConfig, *, operator: Operator | None = None
) -> kopf.OperatorRegistry:
    """A kopf registry with every handler of the operator, bound to ``config``."""
    op = operator or Operator(config)
    registry = kopf.OperatorRegistry()
    retry = config.retry_delay
    background: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry, id="settings")
    def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        tune_settings(settings, config)

    @kopf.on.startup(registry=registry, id="rechecks")
    async def _start_rechecks(**_: Any) -> None:
        background.append(asyncio.create_task(op.recheck_forever()))

    @kopf.on.cleanup(registry=registry, id="rechecks")
    async def _stop_rechecks(**_: Any) -> None:
        for task in background:
            task.cancel()
        background.clear()

    if config.metrics_endpoint is not None:
        endpoint = config.metrics_endpoint

        @kopf.on.startup(registry=registry, id="metrics")
        async def _start_metrics(**_: Any) -> None:
            try:
                await op.metrics.start(endpoint)
            except OSError as exc:
                raise kopf.PermanentError(
                    f"cannot serve metrics on {endpoint}: {exc.strerror or exc}; choose "
                    "another port with --metrics, or --metrics off"
                ) from exc
            logger.info("metrics served on %s", op.metrics.url)

        @kopf.on.cleanup(registry=registry, id="metrics")
        async def _stop_metrics(**_: Any) -> None:
            await op.metrics.stop()

    @kopf.on.login(registry=registry, id="login")
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return op.login()

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, id="reconcile")
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="reconcile")
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, id="reconcile", field="spec")
    def _reconcile(body: kopf.Body, reason: str, **_: Any) -> None:
        with kopf_errors(retry_delay=retry):
            try:
                op.reconcile(body, cause=str(reason))
            except OperatorError as exc:
                op.metrics.reconcile_error(exc)
                raise

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="track")
    def _track(
        event: Mapping[str, Any], body: kopf.Body, namespace: str, name: str, **_: Any
    ) -> None:
        exists = event.get("type") != "DELETED"
        op.remember(namespace, name, exists=exists)
        if exists:
            op.metrics.observe(body)
        else:
            op.metrics.forget(namespace, name)

    def _quietly(what: str, fn: Callable[[], None]) -> None:
        # Event handlers are not retried by kopf: log and leave it to the next event or
        # the periodic re-check.
        try:
            fn()
        except OperatorError as exc:
            logger.warning("%s: %s (the periodic re-check will try again)", what, exc)

    @kopf.on.event("batch", "v1", "cronjobs", labels=MANAGED_BY, registry=registry, id="cronjob")
    def _cronjob(event: Mapping[str, Any], body: kopf.Body, name: str, **_: Any) -> None:
        _quietly(f"CronJob {name}", lambda: op.on_cronjob_event(event.get("type"), body))

    @kopf.on.event("batch", "v1", "jobs", labels=MANAGED_BY, registry=registry, id="job")
    def _job(event: Mapping[str, Any], namespace: str, name: str, **_: Any) -> None:
        if event.get("type") != "DELETED":
            _quietly(f"Job {name}", lambda: op.sync_job(namespace, name))

    @kopf.on.event("", "v1", "pods", labels=MANAGED_BY, registry=registry, id="pod")
    def _pod(event: Mapping[str, Any], body: kopf.Body, namespace: str, **_: Any) -> None:
        job = _job_of_pod(body)
        if job and event.get("type") != "DELETED":
            _quietly(f"Pod {_meta(body).get('name')}", lambda: op.sync_job(namespace, job))

    return registry
