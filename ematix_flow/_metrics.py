"""Prometheus metrics of pipeline runs: one catalogue, two producers, two sinks.

:data:`METRICS` names every metric once — name, type, labels, help text — for both
producers, so a dashboard or an alert works whichever one feeds it:

* the operator (:mod:`ematix_flow_operator.metrics`) serves them on ``/metrics`` for each
  EmatixPipeline, derived from the resource's status (labels ``namespace``, ``name``,
  ``pipeline``);
* ``flow run`` / ``flow run-due`` write them for runs outside Kubernetes (label
  ``pipeline``): :func:`write_textfile` for node_exporter's textfile collector
  (``--metrics-file``), :func:`push` to a Pushgateway (``--pushgateway``).

Both producers describe each pipeline as a :class:`PipelineFigures` and render it with
:func:`metric_families`::

    record = RunRecord(report, started=t0, finished=t1)    # one flow run, timed
    write_textfile("/var/lib/node_exporter/textfile/flow.prom", [record])
    push("http://pushgateway:9091", [record])

Labels carry names only (namespace, resource, pipeline, target, row kind, reason):
never a DSN, a host or an error text. No module here imports a front end.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "JOB",
    "METRICS",
    "METRICS_FILE_ENV",
    "PUSHGATEWAY_ENV",
    "ROW_KINDS",
    "Metric",
    "PipelineFigures",
    "RunRecord",
    "TargetFigures",
    "figures_of_run",
    "metric_families",
    "push",
    "registry_of",
    "watermark_timestamp",
    "write_textfile",
]

#: ``flow run --metrics-file`` / ``flow run-due --metrics-file`` read it when not given.
METRICS_FILE_ENV = "EMATIX_FLOW_METRICS_FILE"
#: ``flow run --pushgateway`` / ``flow run-due --pushgateway`` read it when not given.
PUSHGATEWAY_ENV = "EMATIX_FLOW_PUSHGATEWAY"
#: The Pushgateway job every plain run pushes under (grouped by pipeline below it).
JOB = "ematix_flow"
#: Values of the ``kind`` label of the row metrics, in the order dashboards list them.
ROW_KINDS = ("inserted", "updated", "deleted", "unchanged", "expired")

Scope = Literal["pipeline", "target", "operator"]
Source = Literal["operator", "file", "pushgateway"]
_ALL: frozenset[Source] = frozenset({"operator", "file", "pushgateway"})
_STATEFUL: frozenset[Source] = frozenset({"operator", "file"})
_OPERATOR: frozenset[Source] = frozenset({"operator"})


@dataclass(frozen=True)
class Metric:
    """One metric of the catalogue.

    ``labels`` are the labels beyond the scope's own: a ``pipeline`` metric also has
    the pipeline labels (``namespace``, ``name``, ``pipeline`` from the operator,
    ``pipeline`` from a plain run), a ``target`` metric those and ``target``.
    ``sources`` says who writes it: the operator, ``--metrics-file``, ``--pushgateway``.
    """

    name: str
    type: Literal["gauge", "counter"]
    scope: Scope
    help: str
    labels: tuple[str, ...] = ()
    sources: frozenset[Source] = _ALL

    @property
    def sample_name(self) -> str:
        """The name of its samples (counters end in ``_total``)."""
        return f"{self.name}_total" if self.type == "counter" else self.name


METRICS: tuple[Metric, ...] = (
    Metric(
        "ematix_flow_pipeline_last_success_timestamp_seconds",
        "gauge",
        "pipeline",
        "When the pipeline's latest successful run finished (Unix time). A failed run "
        "leaves it as it was.",
    ),
    Metric(
        "ematix_flow_pipeline_last_run_timestamp_seconds",
        "gauge",
        "pipeline",
        "When the pipeline's latest finished run ended, successful or not (Unix time).",
    ),
    Metric(
        "ematix_flow_pipeline_last_run_duration_seconds",
        "gauge",
        "pipeline",
        "How long the pipeline's latest finished run took.",
    ),
    Metric(
        "ematix_flow_pipeline_last_run_success",
        "gauge",
        "pipeline",
        "1 when the pipeline's latest finished run succeeded, 0 when it failed.",
    ),
    Metric(
        "ematix_flow_pipeline_consecutive_failures",
        "gauge",
        "pipeline",
        "Failed runs of the pipeline since its latest success.",
        sources=_STATEFUL,
    ),
    Metric(
        "ematix_flow_pipeline_ready",
        "gauge",
        "pipeline",
        "1 when the EmatixPipeline's CronJob is in place, 0 when its spec is invalid.",
        sources=_OPERATOR,
    ),
    Metric(
        "ematix_flow_pipeline_suspended",
        "gauge",
        "pipeline",
        "1 when the EmatixPipeline is suspended (spec.suspend), else 0.",
        sources=_OPERATOR,
    ),
    Metric(
        "ematix_flow_pipeline_next_schedule_timestamp_seconds",
        "gauge",
        "pipeline",
        "When the schedule next starts a run (Unix time); absent while suspended or invalid.",
        sources=_OPERATOR,
    ),
    Metric(
        "ematix_flow_pipeline_run_due_since_timestamp_seconds",
        "gauge",
        "pipeline",
        "Since when a successful run is due: the first scheduled start after the latest "
        "success, or after the resource was created (Unix time); absent while none is due, "
        "suspended or invalid.",
        sources=_OPERATOR,
    ),
    Metric(
        "ematix_flow_target_last_run_rows",
        "gauge",
        "target",
        "Rows of the target in the pipeline's latest finished run, by kind (0 for a target "
        "that failed: its transaction rolled back).",
        labels=("kind",),
    ),
    Metric(
        "ematix_flow_target_rows",
        "counter",
        "target",
        "Rows of the target over every counted run, by kind (each run once).",
        labels=("kind",),
        sources=_STATEFUL,
    ),
    Metric(
        "ematix_flow_target_watermark_timestamp_seconds",
        "gauge",
        "target",
        "The target's watermark after its latest successful run, for date and timestamp "
        "watermarks (Unix time).",
    ),
    Metric(
        "ematix_flow_operator_pipelines",
        "gauge",
        "operator",
        "EmatixPipeline resources the operator currently sees.",
        sources=_OPERATOR,
    ),
    Metric(
        "ematix_flow_operator_reconcile_errors",
        "counter",
        "operator",
        "Failed reconciles of EmatixPipelines, by reason (an invalid spec's reason, "
        "ApiError or TransientApiError).",
        labels=("reason",),
        sources=_OPERATOR,
    ),
    Metric(
        "ematix_flow_operator_api_retries",
        "counter",
        "operator",
        "Kubernetes API calls that failed transiently and are retried, by reason "
        "(Conflict, TooManyRequests, ServerError, Connection).",
        labels=("reason",),
        sources=_OPERATOR,
    ),
)

_BY_NAME = {m.name: m for m in METRICS}


# --- figures: what one pipeline looks like, whoever measured it -------------------------


@dataclass
class TargetFigures:
    """One target's figures; ``None`` / empty means "no such series"."""

    last_rows: dict[str, int] = field(default_factory=dict)
    rows_total: dict[str, int] = field(default_factory=dict)
    watermark_timestamp: float | None = None


@dataclass
class PipelineFigures:
    """One pipeline's figures and the labels that identify it."""

    labels: dict[str, str]
    last_success: float | None = None
    last_run: float | None = None
    last_run_duration: float | None = None
    last_run_success: bool | None = None
    consecutive_failures: int | None = None
    ready: bool | None = None
    suspended: bool | None = None
    next_schedule: float | None = None
    run_due_since: float | None = None
    targets: dict[str, TargetFigures] = field(default_factory=dict)

    def pipeline_values(self) -> dict[str, float | None]:
        """Value of each pipeline-scope metric (``None``: no sample)."""

        def num(value: bool | float | None) -> float | None:
            return None if value is None else float(value)

        return {
            "ematix_flow_pipeline_last_success_timestamp_seconds": self.last_success,
            "ematix_flow_pipeline_last_run_timestamp_seconds": self.last_run,
            "ematix_flow_pipeline_last_run_duration_seconds": self.last_run_duration,
            "ematix_flow_pipeline_last_run_success": num(self.last_run_success),
            "ematix_flow_pipeline_consecutive_failures": num(self.consecutive_failures),
            "ematix_flow_pipeline_ready": num(self.ready),
            "ematix_flow_pipeline_suspended": num(self.suspended),
            "ematix_flow_pipeline_next_schedule_timestamp_seconds": self.next_schedule,
            "ematix_flow_pipeline_run_due_since_timestamp_seconds": self.run_due_since,
        }


_WATERMARK_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}"  # a date first: an integer watermark is no time
    r"(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
    r"(?:Z|[+-]\d{2}(?::?\d{2})?)?$"
)


def watermark_timestamp(text: str | None) -> float | None:
    """Unix time of a date or timestamp watermark; ``None`` for any other type.

    Watermarks are stored as the canonical text of their type, written by sessions
    pinned to UTC and ISO dates: a value without an offset is UTC.

    >>> watermark_timestamp("2026-11-29 06:00:00+00")
    1795932000.0
    >>> watermark_timestamp("2026-11-29"), watermark_timestamp("1234")
    (1795910400.0, None)
    """
    if not text or not _WATERMARK_TIME.match(text.strip()):
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace(" ", "T").replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def metric_families(
    pipelines: Iterable[PipelineFigures],
    *,
    label_names: Sequence[str],
    source: Source,
    extra: Mapping[str, Mapping[tuple[str, ...], float]] | None = None,
) -> list[Any]:
    """prometheus_client metric families of ``pipelines`` (families without samples left
    out). ``label_names`` are the pipeline labels; ``extra`` holds operator-scope values
    (metric name → label values → value)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    pipelines = list(pipelines)
    families = []
    for metric in METRICS:
        if source not in metric.sources:
            continue
        if metric.scope == "operator":
            names: list[str] = list(metric.labels)
        elif metric.scope == "pipeline":
            names = [*label_names, *metric.labels]
        else:
            names = [*label_names, "target", *metric.labels]
        cls = CounterMetricFamily if metric.type == "counter" else GaugeMetricFamily
        family = cls(metric.name, metric.help, labels=names)
        for labels, value in _samples(metric, pipelines, label_names, extra or {}):
            family.add_metric(list(labels), value)
        if family.samples:
            families.append(family)
    return families


def _samples(
    metric: Metric,
    pipelines: Sequence[PipelineFigures],
    label_names: Sequence[str],
    extra: Mapping[str, Mapping[tuple[str, ...], float]],
) -> Iterator[tuple[tuple[str, ...], float]]:
    if metric.scope == "operator":
        for labels, value in sorted((extra.get(metric.name) or {}).items()):
            yield labels, float(value)
        return
    for p in pipelines:
        base = tuple(p.labels.get(name, "") for name in label_names)
        if metric.scope == "pipeline":
            value = p.pipeline_values()[metric.name]
            if value is not None:
                yield base, value
            continue
        for target, t in sorted(p.targets.items()):
            if metric.name == "ematix_flow_target_watermark_timestamp_seconds":
                if t.watermark_timestamp is not None:
                    yield (*base, target), t.watermark_timestamp
                continue
            rows = (
                t.last_rows if metric.name == "ematix_flow_target_last_run_rows" else t.rows_total
            )
            for kind in ROW_KINDS:
                if kind in rows:
                    yield (*base, target, kind), float(rows[kind])


def registry_of(
    pipelines: Iterable[PipelineFigures], *, label_names: Sequence[str], source: Source
) -> CollectorRegistry:
    """A registry that holds exactly the families of ``pipelines`` (a snapshot)."""
    from prometheus_client.registry import CollectorRegistry

    families = metric_families(pipelines, label_names=label_names, source=source)

    class _Snapshot:
        def collect(self) -> list[Any]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot())  # type: ignore[arg-type]
    return registry


# --- plain runs: flow run / run-due ------------------------------------------------------

_PLAIN_LABELS = ("pipeline",)


@dataclass(frozen=True)
class RunRecord:
    """One pipeline run of ``flow run`` / ``flow run-due`` and when it ran (Unix time).

    ``report`` is a :class:`~ematix_flow.pipeline.RunReport` (anything with ``pipeline``,
    ``results`` and ``failed``; each result with ``target``, ``status``, the ``rows_*``
    counts and ``watermark_after``).
    """

    report: Any
    started: float
    finished: float

    @property
    def outcome(self) -> Literal["succeeded", "failed", "skipped"]:
        """``failed`` when something failed (a target interrupted by Ctrl-C too, though
        the CLI exports no metrics for a run that did not finish); ``skipped`` when no
        target ran (each was held by another run, or had already served its slot); else
        ``succeeded``."""
        if self.report.failed:
            return "failed"
        if not any(r.status == "succeeded" for r in self.report.results):
            return "skipped"
        return "succeeded"


def _rows_of(result: Any) -> dict[str, int]:
    if result.status != "succeeded":
        return dict.fromkeys(ROW_KINDS, 0)  # rolled back (or never ran): nothing written
    return {kind: int(getattr(result, f"rows_{kind}", 0) or 0) for kind in ROW_KINDS}


def figures_of_run(
    record: RunRecord, previous: PipelineFigures | None = None
) -> PipelineFigures | None:
    """The figures after ``record``, carrying ``previous`` forward (last success, failure
    streak, row totals, watermarks). ``None`` when the run ran no target (all skipped):
    there is nothing new to say."""
    if record.outcome == "skipped":
        return previous
    report = record.report
    prev = previous or PipelineFigures(labels={"pipeline": report.pipeline})
    ok = record.outcome == "succeeded"
    figures = PipelineFigures(
        labels={"pipeline": str(report.pipeline)},
        last_success=record.finished if ok else prev.last_success,
        last_run=record.finished,
        last_run_duration=max(0.0, record.finished - record.started),
        last_run_success=ok,
        consecutive_failures=0 if ok else (prev.consecutive_failures or 0) + 1,
        targets={name: TargetFigures(**vars(t)) for name, t in prev.targets.items()},
    )
    for name in figures.targets:
        figures.targets[name].last_rows = {}
    for result in report.results:
        t = figures.targets.setdefault(str(result.target), TargetFigures())
        t.last_rows = _rows_of(result)
        t.rows_total = {k: t.rows_total.get(k, 0) + n for k, n in t.last_rows.items()}
        if result.status == "succeeded":
            stamp = watermark_timestamp(getattr(result, "watermark_after", None))
            t.watermark_timestamp = stamp if stamp is not None else t.watermark_timestamp
    return figures


def _read_textfile(text: str) -> dict[str, PipelineFigures]:
    """Figures per pipeline from a file :func:`write_textfile` wrote (others ignored)."""
    from prometheus_client.parser import text_string_to_metric_families

    fields = {
        "ematix_flow_pipeline_last_success_timestamp_seconds": "last_success",
        "ematix_flow_pipeline_last_run_timestamp_seconds": "last_run",
        "ematix_flow_pipeline_last_run_duration_seconds": "last_run_duration",
        "ematix_flow_pipeline_last_run_success": "last_run_success",
        "ematix_flow_pipeline_consecutive_failures": "consecutive_failures",
    }
    out: dict[str, PipelineFigures] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            pipeline = sample.labels.get("pipeline")
            if not pipeline:
                continue
            p = out.setdefault(pipeline, PipelineFigures(labels={"pipeline": pipeline}))
            name = sample.name
            if name in fields:
                value: Any = sample.value
                if fields[name] == "last_run_success":
                    value = bool(value)
                elif fields[name] == "consecutive_failures":
                    value = int(value)
                setattr(p, fields[name], value)
                continue
            target = sample.labels.get("target")
            if not target:
                continue
            t = p.targets.setdefault(target, TargetFigures())
            kind = sample.labels.get("kind", "")
            if name == "ematix_flow_target_last_run_rows" and kind in ROW_KINDS:
                t.last_rows[kind] = int(sample.value)
            elif name == "ematix_flow_target_rows_total" and kind in ROW_KINDS:
                t.rows_total[kind] = int(sample.value)
            elif name == "ematix_flow_target_watermark_timestamp_seconds":
                t.watermark_timestamp = sample.value
    return out


def _warn(message: str) -> None:
    print(f"ematix-flow: {message}", file=sys.stderr)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two runs sharing one file (run-due from cron overlapping a manual run) would lose
    # each other's update between read and replace: serialize them on a sidecar lock.
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_textfile(path: str | os.PathLike[str], records: Sequence[RunRecord]) -> bool:
    """Update the textfile-collector file ``path`` with ``records``, atomically.

    The file keeps every pipeline it held: a pipeline that did not run now (run-due
    found it not due) keeps its series; one that ran gets new ones, with its last
    success, failure streak, row totals and watermarks carried forward. The new text is
    written to a hidden file in the same folder and renamed over ``path``, so
    node_exporter never reads half a file. Returns False (and says why on stderr) when
    the file cannot be written; a run's outcome never depends on it.
    """
    from prometheus_client.exposition import generate_latest

    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target):
            try:
                state = _read_textfile(target.read_text(encoding="utf-8"))
            except FileNotFoundError:
                state = {}
            except ValueError:
                _warn(f"{target} is not in the Prometheus text format; starting it afresh")
                state = {}
            for record in records:
                updated = figures_of_run(record, state.get(record.report.pipeline))
                if updated is not None:
                    state[record.report.pipeline] = updated
            registry = registry_of(
                [state[name] for name in sorted(state)], label_names=_PLAIN_LABELS, source="file"
            )
            data = generate_latest(registry)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp, 0o644)  # node_exporter usually runs as another user
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    except OSError as exc:
        _warn(f"could not write the metrics file {target}: {exc.strerror or exc}")
        return False
    return True


def _redacted(url: str) -> str:
    from ematix_flow._core import redact_dsn

    return redact_dsn(url)


def push(url: str, records: Sequence[RunRecord], *, timeout: float = 10.0) -> bool:
    """Push-add each run's figures to the Pushgateway at ``url``.

    One group per pipeline (``job="ematix_flow"``, ``pipeline=<name>``), with POST
    (push-add): metrics the push leaves out keep their last value, so a failed run
    never erases the last success. Only what one run knows is pushed — no failure
    streak, no row totals (see docs/monitoring.md). Credentials in the URL
    (``https://user:password@host``) become basic auth and are never printed. Returns
    False (and says why on stderr) when a push fails; a run's outcome never depends on it.
    """
    from prometheus_client.exposition import (
        basic_auth_handler,
        default_handler,
        pushadd_to_gateway,
    )

    parts = urlsplit(url)
    handler = default_handler
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        url = urlunsplit(parts._replace(netloc=netloc))

        def handler(url: str, method: str, timeout: float | None, headers: Any, data: Any) -> Any:
            return basic_auth_handler(url, method, timeout, headers, data, user, password)

    ok = True
    for record in records:
        figures = figures_of_run(record)
        if figures is None:
            continue
        figures.consecutive_failures = None  # a push knows one run, not the streak
        for t in figures.targets.values():
            t.rows_total = {}
        registry = registry_of([figures], label_names=_PLAIN_LABELS, source="pushgateway")
        try:
            pushadd_to_gateway(
                url,
                job=JOB,
                grouping_key={"pipeline": record.report.pipeline},
                registry=registry,
                timeout=timeout,
                handler=handler,
            )
        except Exception as exc:  # urllib's errors vary: HTTPError, URLError, OSError
            ok = False
            reason = _redacted(str(getattr(exc, "reason", None) or exc))
            _warn(
                f"could not push the metrics of {record.report.pipeline} to "
                f"{_redacted(url)}: {reason}"
            )
    return ok
