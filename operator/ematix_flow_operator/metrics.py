"""The operator's Prometheus endpoint: each EmatixPipeline's runs, and the operator's health.

What is served is a function of the resources the operator sees, read at scrape time
(:func:`figures_of_resource` is pure): the status holds every figure — last success,
the latest finished run, the failure streak, per-target row totals counted once per Job
(:func:`~ematix_flow_operator.status.with_run`) — so an operator that restarts serves the
same values, never a Job counted twice. A deleted resource's series disappear with it.
Names, types and help texts are the shared catalogue :data:`ematix_flow._metrics.METRICS`
(also written by ``flow run --metrics-file``).

::

    metrics = OperatorMetrics()
    metrics.observe(body)                       # every watch event of an EmatixPipeline
    metrics.forget(namespace, name)             # DELETED
    await metrics.start("http://0.0.0.0:9090/metrics")
    metrics.url                                 # where it listens (port 0 → the real one)

Only names reach labels (namespace, resource, pipeline, target, reasons): never a DSN,
a Secret's content or an error text.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ematix_flow._metrics import (
    ROW_KINDS,
    PipelineFigures,
    TargetFigures,
    metric_families,
    watermark_timestamp,
)
from ematix_flow_operator.config import parse_endpoint
from ematix_flow_operator.errors import InvalidSpecError, OperatorError, TransientApiError

__all__ = ["LABELS", "OperatorMetrics", "figures_of_resource", "reason_of"]

#: The labels of every pipeline series the operator serves.
LABELS = ("namespace", "name", "pipeline")
_FINISHED = frozenset({"Succeeded", "Failed"})
_ROW_FIELDS = {kind: f"rows{kind.capitalize()}" for kind in ROW_KINDS}


def _time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _schedule(
    spec: Mapping[str, Any], since: float | None, now: float
) -> tuple[float | None, float | None]:
    """(due since, next start) of the cron schedule in the spec's time zone: the first
    start after ``since`` if it is not after ``now``, and the first start after ``now``."""
    from croniter import croniter

    try:
        zone = ZoneInfo(str(spec.get("timeZone") or "Etc/UTC"))
        schedule = str(spec["schedule"])
        nxt = croniter(schedule, datetime.fromtimestamp(now, tz=zone)).get_next(datetime)
        due = None
        if since is not None:
            first = croniter(schedule, datetime.fromtimestamp(since, tz=zone)).get_next(datetime)
            due = first.timestamp() if first.timestamp() <= now else None
    except Exception:  # croniter and zoneinfo raise several unrelated types
        return None, None
    return due, nxt.timestamp()


def figures_of_resource(body: Mapping[str, Any], *, now: float) -> PipelineFigures:
    """The figures of one EmatixPipeline (as the API returns it) at Unix time ``now``."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    figures = PipelineFigures(
        labels={
            "namespace": str(meta.get("namespace") or ""),
            "name": str(meta.get("name") or ""),
            "pipeline": str(spec.get("pipeline") or ""),
        },
        last_success=_time(status.get("lastSuccessfulTime")),
        consecutive_failures=int(status.get("consecutiveFailures") or 0),
        suspended=bool(spec.get("suspend")),
    )
    ready = next((c for c in status.get("conditions") or () if c.get("type") == "Ready"), None)
    if ready is not None:
        figures.ready = ready.get("status") == "True"
    if figures.ready is not False and not figures.suspended and spec.get("schedule"):
        # Due since the first start after the latest success (or the creation): a
        # resource created at 10:00 with a daily 06:00 schedule owes nothing until 06:00.
        known = [t for t in (figures.last_success, _time(meta.get("creationTimestamp"))) if t]
        figures.run_due_since, figures.next_schedule = _schedule(
            spec, max(known) if known else None, now
        )

    finished = status.get("lastFinishedRun") or {}
    if not finished and (status.get("lastRun") or {}).get("phase") in _FINISHED:
        finished = status["lastRun"]  # a status written before lastFinishedRun existed
    if finished.get("phase") in _FINISHED:
        figures.last_run = _time(finished.get("completionTime"))
        duration = finished.get("durationSeconds")
        figures.last_run_duration = float(duration) if duration is not None else None
        figures.last_run_success = finished["phase"] == "Succeeded"
        for t in finished.get("targets") or ():
            if not t.get("target"):
                continue
            target = figures.targets.setdefault(str(t["target"]), TargetFigures())
            ok = t.get("status") == "succeeded"
            target.last_rows = {
                kind: int(t.get(key) or 0) if ok else 0 for kind, key in _ROW_FIELDS.items()
            }
    for t in status.get("targetTotals") or ():
        if not t.get("target"):
            continue
        target = figures.targets.setdefault(str(t["target"]), TargetFigures())
        target.rows_total = {kind: int(t.get(key) or 0) for kind, key in _ROW_FIELDS.items()}
        target.watermark_timestamp = watermark_timestamp(t.get("watermark"))
    return figures


def reason_of(exc: OperatorError) -> str:
    """The ``reason`` label of a failed reconcile."""
    if isinstance(exc, InvalidSpecError):
        return exc.reason
    return type(exc).__name__.replace("Call", "")  # ApiError, TransientApiError


def _retry_reason(exc: TransientApiError) -> str:
    if exc.status == 409:
        return "Conflict"
    if exc.status == 429:
        return "TooManyRequests"
    if exc.status is not None:
        return "ServerError"
    return "Connection"


class OperatorMetrics:
    """The operator's metrics: a prometheus_client collector and its HTTP endpoint.

    Thread-safe: handlers run in kopf's threads; scrapes read a consistent snapshot.
    """

    def __init__(self) -> None:
        from prometheus_client.registry import CollectorRegistry

        self._guard = threading.Lock()
        self._resources: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._errors: Counter[str] = Counter()
        self._retries: Counter[str] = Counter()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # type: ignore[arg-type]
        self._runner: Any = None
        self.url: str | None = None

    # --- what the handlers report ---------------------------------------------------------

    def observe(self, body: Mapping[str, Any]) -> None:
        """Remember the latest state of a resource (from any watch event but DELETED)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        keep = {
            "metadata": {
                "namespace": meta.get("namespace"),
                "name": meta.get("name"),
                "creationTimestamp": meta.get("creationTimestamp"),
            },
            "spec": dict(body.get("spec") or {}),
            "status": dict(body.get("status") or {}),
        }
        with self._guard:
            self._resources[key] = keep

    def forget(self, namespace: str, name: str) -> None:
        """A resource was deleted: its series go."""
        with self._guard:
            self._resources.pop((namespace, name), None)

    def reconcile_error(self, exc: OperatorError) -> None:
        with self._guard:
            self._errors[reason_of(exc)] += 1

    def api_retry(self, exc: TransientApiError) -> None:
        with self._guard:
            self._retries[_retry_reason(exc)] += 1

    # --- prometheus_client's collector protocol -------------------------------------------

    def collect(self) -> list[Any]:
        now = time.time()
        with self._guard:
            bodies = [self._resources[key] for key in sorted(self._resources)]
            extra = {
                "ematix_flow_operator_pipelines": {(): float(len(bodies))},
                "ematix_flow_operator_reconcile_errors": {
                    (reason,): float(n) for reason, n in self._errors.items()
                },
                "ematix_flow_operator_api_retries": {
                    (reason,): float(n) for reason, n in self._retries.items()
                },
            }
        figures = [figures_of_resource(body, now=now) for body in bodies]
        return metric_families(figures, label_names=LABELS, source="operator", extra=extra)

    # --- the endpoint ------------------------------------------------------------------------

    async def start(self, endpoint: str) -> None:
        """Serve ``GET <path>`` on the endpoint's host and port (port 0: any free one)."""
        from aiohttp import web
        from prometheus_client import exposition

        # The text format every Prometheus 2.x reads (our names need nothing newer).
        content_type = getattr(
            exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST
        )
        host, port, path = parse_endpoint(endpoint)

        async def scrape(_: web.Request) -> web.Response:
            body = await asyncio.to_thread(exposition.generate_latest, self.registry)
            return web.Response(body=body, headers={"Content-Type": content_type})

        app = web.Application()
        app.router.add_get(path, scrape)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0][1] if runner.addresses else port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound}{path}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
