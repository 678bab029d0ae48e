"""Pipelines: ``sync()`` one target, ``register()`` a scheduled pipeline, and run,
dry-run or preview registered pipelines by name.

Example (spec §1)::

    from ematix_flow import _core, pipeline
    from ematix_flow.source import Source

    @pipeline.register(name="customer_sync", schedule="0 * * * *")
    def customer_sync():
        conn = _core.connect("postgres://user:pass@host:5432/warehouse")
        return pipeline.sync(
            target=CustomerDim,
            source=Source.postgres_query(conn, "SELECT id AS customer_id, … FROM app.users"),
            target_connection=conn,
            mode="scd2",
        )

    pipeline.run("customer_sync").ok

What :func:`sync` does depends on the action of the surrounding run, held in a context
variable: ``run`` (plan, execute, commit — also the default outside any run),
``dry_run`` (plan, execute, roll back) or ``preview`` (plan only). Each call appends its
:class:`~ematix_flow._engine.TargetResult` (with its Plan) to the current
:class:`RunReport`, so the three actions share one code path and a preview cannot lie.

Failure policy: in a ``run``, a failed target raises (the pipeline body stops: "halt on
first failure") unless the pipeline was registered with ``continue_on_failure=True``;
a ``dry_run`` or ``preview`` never raises for a target, so one pass shows every problem.
"""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from ematix_flow._engine import TargetOptions, TargetResult, execute, plan
from ematix_flow._engine.execute import record_failure
from ematix_flow._engine.state import run_scope
from ematix_flow._engine.steer import Steer
from ematix_flow._errors import (
    ConfigurationError,
    DefinitionError,
    EmatixFlowError,
    PipelineNotFoundError,
)
from ematix_flow._option_keywords import NOT_GIVEN, OPTION_NAMES, NotGiven
from ematix_flow._tablespec import TableSpec
from ematix_flow.source import Source
from ematix_flow.table import table_spec

__all__ = [
    "ACTIONS",
    "AD_HOC",
    "Progress",
    "RunReport",
    "ScheduledPipeline",
    "TargetInfo",
    "current_action",
    "dry_run",
    "get",
    "preview",
    "register",
    "registry",
    "run",
    "sync",
]

ACTIONS = ("run", "dry_run", "preview")
#: Pipeline name recorded for a ``sync()`` called outside any registered pipeline.
AD_HOC = "(ad hoc)"

_action: ContextVar[str] = ContextVar("ematix_flow_action", default="run")
_report: ContextVar[RunReport | None] = ContextVar("ematix_flow_report", default=None)
_progress: ContextVar[Callable[[Progress], None] | None] = ContextVar(
    "ematix_flow_progress", default=None
)
_steer: ContextVar[Steer | None] = ContextVar("ematix_flow_steer", default=None)
#: The run's shared source read: (the Source, {id(target connection): Shared}).
_shared: ContextVar[tuple[Any, dict[int, Any]] | None] = ContextVar(
    "ematix_flow_shared", default=None
)


@dataclass(frozen=True)
class Progress:
    """What a run is doing, for a ``progress=`` callback (the CLI's progress display).

    ``kind``: ``window`` (a backfill window begins; ``text`` names it: ``[lo, hi)``),
    ``window_done`` (a window every target completed before: skipped), ``started`` (a
    target's transaction begins; ``text`` is its path), ``step`` (``text`` is the step
    about to run), ``rows`` (a cross-DB copy has streamed ``rows`` rows so far; told
    about every half second), ``finished`` (``result`` is the target's outcome:
    succeeded, failed, skipped, interrupted…). ``str()`` gives a short text.

    Example::

        pipeline.run("customer_sync", progress=lambda p: print(p, file=sys.stderr))
        # warehouse.customer_dim: started … copy source → stage … 120,000 rows copied
    """

    kind: str
    pipeline: str
    target: str | None = None
    mode: str | None = None
    text: str = ""
    rows: int | None = None
    result: TargetResult | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        if self.kind == "window":
            return f"window {self.text}"
        if self.kind == "window_done":
            return f"window {self.text}: done before, skipped"
        if self.kind == "started":
            return f"{self.target}: started"
        if self.kind == "rows":
            return f"{self.target}: {self.rows or 0:,} rows copied"
        if self.kind == "finished" and self.result is not None:
            return f"{self.target}: {self.result.status}"
        return f"{self.target}: {self.text}"


@dataclass(repr=False)
class RunReport:
    """The outcome of one run / dry-run / preview of a pipeline.

    Printed, or shown in a REPL or notebook, it explains itself in plain text
    (:meth:`explain`): per target the decisions with their reasons, the table with the
    framework's columns marked, drift, watermark and the SQL plan — spec §3.5's
    "preview() shows the plan" for Python users; ``flow preview`` draws the same facts
    with colour.
    """

    pipeline: str
    action: str
    results: list[TargetResult] = field(default_factory=list)
    #: An error outside any target (the pipeline body raised).
    error: str | None = None
    continue_on_failure: bool = False
    #: ``flow run-due``: the schedule slot this run serves (re-checked under each
    #: target's lock, so two overlapping run-due processes run a slot once).
    due_slot: datetime | None = field(default=None, repr=False, compare=False)
    _warned: set[str] = field(default_factory=set, repr=False)
    #: The exception behind ``error`` (for callers that need its class).
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.ok for r in self.results)

    @property
    def failed(self) -> bool:
        """An error, or a target that failed. A target *skipped* because another run
        held its lock or had already served its slot is not a failure: ``flow run-due``,
        called every minute, exits 0 for it (``flow run`` still requires ``ok``)."""
        return self.error is not None or any(
            not r.ok and r.status != "skipped" for r in self.results
        )

    @property
    def configuration_failed(self) -> bool:
        """A connection or setting was wrong (retrying will not help): the CLI exits
        CONFIG_ERROR instead of RUN_FAILED."""
        found = [self.exception, *(r.exception for r in self.results if not r.ok)]
        return any(isinstance(e, ConfigurationError) for e in found)

    def to_dict(self) -> dict[str, Any]:
        stable = self.action != "run"
        return {
            "pipeline": self.pipeline,
            "action": self.action,
            "ok": self.ok,
            "error": self.error,
            "targets": [r.to_dict(stable=stable) for r in self.results],
        }

    def explain(self, *, verbose: bool | None = None) -> str:
        """A plain-text explanation: the full plan of each target (``verbose``, the
        default for one target), or one line per target (the default for several).

        Example::

            print(customer_sync.preview().explain(verbose=True))
        """
        return _explain(self, verbose=len(self.results) <= 1 if verbose is None else verbose)

    def __str__(self) -> str:
        return self.explain()

    def __repr__(self) -> str:
        return self.explain()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython / Jupyter: show the explanation, not the fields."""
        printer.text(f"RunReport({self.pipeline!r})" if cycle else self.explain())


# --- the plain-text explanation of a report ---------------------------------------------
#
# Built here, from ``Plan.to_dict()``, because this layer may not import the rich
# renderer of ``ematix_flow._preview`` (the front end); no colour, no dependency, and
# the same facts, so what ``print(report)`` says and what ``flow preview`` draws agree.

_ACTION_TITLE = {"run": "run", "dry_run": "dry run (rolled back)", "preview": "preview"}
_MARK = {
    "succeeded": "✓",
    "planned": "✓",
    "skipped": "–",
    "failed": "✗",
    "not_run": "·",
    "interrupted": "✗",
}


def _explain(report: RunReport, *, verbose: bool) -> str:
    from ematix_flow._core import redact_dsn

    n = len(report.results)
    status = "ok" if report.ok else "FAILED"
    lines = [
        f"{report.pipeline}   {_ACTION_TITLE.get(report.action, report.action)}   "
        f"targets: {n}   {status}"
    ]
    if report.error:
        lines.append(f"  error: {report.error}")
    for i, result in enumerate(report.results):
        if verbose or i == 0:
            lines.append("")
        lines.extend(_target_lines(result, verbose=verbose, dry=report.action == "dry_run"))
    if n > 1 and not verbose:
        lines += ["", "  .explain(verbose=True) for the plan of each target"]
    return redact_dsn("\n".join(lines))


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _target_lines(result: TargetResult, *, verbose: bool, dry: bool) -> list[str]:
    plan_ = result.plan.to_dict() if result.plan is not None else None
    keys = "(" + ", ".join(plan_["keys"]) + ")" if plan_ and plan_["keys"] else "—"
    head = (
        f"  {_MARK.get(result.status, '?')} {result.target}   mode={result.mode}   "
        f"keys={keys}   path={result.path or '—'}   {result.status}"
    )
    lines = [head]
    if result.error:
        where = f" (in step {result.failed_step!r})" if result.failed_step else ""
        lines.append(f"    error{where}: {result.error}")
    if result.status == "succeeded":
        lines.append(
            f"    rows: inserted {result.rows_inserted:,}, updated {result.rows_updated:,}, "
            f"deleted {result.rows_deleted:,}, unchanged {result.rows_unchanged:,}"
        )
    if not verbose or plan_ is None:
        return lines
    lines.append("    decisions:")
    for d in plan_["decisions"]:
        value = d["value"]
        shown = "(" + ", ".join(map(str, value)) + ")" if isinstance(value, list) else value
        lines.append(f"      {d['topic']}: {shown}   {d['reason']}")
    exists = {True: "exists", False: "will be created", None: "unknown"}[plan_["table_exists"]]
    lines.append(f"    table {plan_['target']} ({exists}); + marks a column the framework adds:")
    for c in plan_["columns"]:
        null = "" if c["nullable"] else " NOT NULL"
        lines.append(f"      {'+' if c['framework'] else ' '} {c['name']} {c['type']}{null}")
    for d in plan_["drift"]:
        lines.append(f"    drift: {', '.join(f'{k}={v}' for k, v in d.items())}")
    if plan_["incremental_column"]:
        wm = plan_["watermark_before"] or "none stored (full read)"
        lines.append(f"    watermark on {plan_['incremental_column']}: {wm}")
    for w in plan_["warnings"]:
        lines.append(f"    warning: {w}")
    for p in plan_["problems"]:
        lines.append(f"    problem ({p['kind']}): {p['message']}")
    for u in plan_["unknown"]:
        lines.append(f"    unknown: {u}")
    rows_by_label = {s.label: s.rows for s in result.steps}
    lines.append(f"    SQL plan ({len(plan_['steps'])} statements):")
    for i, step in enumerate(plan_["steps"], 1):
        label = step["label"]
        affected = ""
        rows = rows_by_label.get(label)
        if dry and rows is not None:
            if isinstance(rows, dict):
                rows = ", ".join(f"{k} {_count(v)}" for k, v in rows.items())
            affected = f"   → rows: {_count(rows)}"
        lines.append(f"      {i}. {label} [{step['kind']}]{affected}")
        if step["note"]:
            lines.append(f"         -- {step['note']}")
        lines.extend(f"         {text}" for text in step["sql"].splitlines())
    return lines


def current_action() -> str:
    """``"run"``, ``"dry_run"`` or ``"preview"``: what the surrounding run is doing."""
    return _action.get()


@contextmanager
def _running(report: RunReport) -> Iterator[RunReport]:
    a = _action.set(report.action)
    r = _report.set(report)
    try:
        yield report
    finally:
        _action.reset(a)
        _report.reset(r)


def sync(
    *,
    target: Any,
    source: Source,
    target_connection: Any,
    mode: str | NotGiven | None = NOT_GIVEN,
    keys: Sequence[str] | NotGiven | None = NOT_GIVEN,
    compare_columns: Sequence[str] | NotGiven | None = NOT_GIVEN,
    update_columns: Sequence[str] | NotGiven | None = NOT_GIVEN,
    event_timestamp_column: str | NotGiven | None = NOT_GIVEN,
    ttl: timedelta | NotGiven | None = NOT_GIVEN,
    handle_deletes: str | NotGiven | None = NOT_GIVEN,
    incremental_column: str | NotGiven | None = NOT_GIVEN,
    incremental_lookback: timedelta | float | NotGiven | None = NOT_GIVEN,
    lock_timeout: float | timedelta | NotGiven | None = NOT_GIVEN,
    statement_timeout: float | timedelta | NotGiven | None = NOT_GIVEN,
    force_path: str | None = None,
) -> dict[str, Any]:
    """Sync one target from ``source``; returns rows inserted/updated/deleted/unchanged,
    path, batch id, duration and status.

    Options not given fall back to the table's declared defaults
    (``@ematix.table(mode=…, handle_deletes=…)``), then to the engine's. ``None`` is a
    real value that switches a table default off: ``handle_deletes=None`` keeps rows
    missing from the source even when the table declares ``handle_deletes="hard"``
    (``ttl=None``: no expiry; ``keys=None`` / ``compare_columns=None``: inferred).
    ``mode`` has no "off", so ``mode=None`` means not given. ``target_connection`` is a
    connection or a configured connection name.

    Example::

        pipeline.sync(target=CustomerDim, source=Source.postgres_table("oltp", "app.users"),
                      target_connection="warehouse", mode="merge")
    """
    report = _report.get()
    owned = report is None
    if report is None:
        report = RunReport(pipeline=AD_HOC, action=_action.get())
    spec = table_spec(target)
    steer = _steer.get()
    if steer is not None and not steer.applies_to(spec.qualified_name):
        # --target names another table: this one is left alone, and not reported
        return TargetResult(
            pipeline=report.pipeline, target=spec.qualified_name, mode="", status="not_selected"
        ).summary()
    given = _given(
        spec,
        mode=mode,
        keys=keys,
        compare_columns=compare_columns,
        update_columns=update_columns,
        event_timestamp_column=event_timestamp_column,
        ttl=ttl,
        handle_deletes=handle_deletes,
        incremental_column=incremental_column,
        incremental_lookback=incremental_lookback,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
    )
    if not isinstance(source, Source):
        raise DefinitionError(
            f"sync(source=...) takes a Source (Source.postgres_query / "
            f"Source.postgres_table), got {source!r}"
        )
    action = report.action
    try:
        options = _options(spec, given, force_path)
        fan = _shared.get()
        shared = None
        if fan is not None and fan[0] is source and not isinstance(target_connection, str):
            shared = fan[1].get(id(target_connection))
        the_plan = plan(
            options,
            source,
            target_connection,
            pipeline=report.pipeline,
            inspect=action == "preview",
            connect_timeout=5,
            steer=steer,
            shared=shared,
        )
    except EmatixFlowError as exc:
        result = TargetResult(
            pipeline=report.pipeline,
            target=spec.qualified_name,
            mode=str(given["mode"]),
            status="failed",
            error=str(exc),
            dry_run=action == "dry_run",
            exception=exc,
        )
        if action == "run":
            record_failure(
                target_connection,
                pipeline=report.pipeline,
                target=spec.qualified_name,
                mode=str(given["mode"]),
                error=str(exc),
            )
    else:
        _warn(report, the_plan.warnings)
        if action == "preview":
            result = TargetResult(
                pipeline=report.pipeline,
                target=spec.qualified_name,
                mode=options.mode,
                status="planned",
                path=the_plan.path,
                watermark_before=the_plan.watermark_before,
                plan=the_plan,
            )
        else:
            told = _progress.get() is not None
            event = Progress("started", report.pipeline, spec.qualified_name, options.mode)
            _tell(event, text=the_plan.path or "")
            result = execute(
                the_plan,
                dry_run=action == "dry_run",
                on_step=(lambda s: _tell(event, kind="step", text=s)) if told else None,
                on_rows=(lambda n: _tell(event, kind="rows", rows=n)) if told else None,
                due_slot=report.due_slot if action == "run" else None,
            )
            if result.plan is not None:
                _warn(report, result.plan.warnings)
    report.results.append(result)
    if action != "preview":
        _tell(Progress("finished", report.pipeline, result.target, result.mode, result=result))
    if isinstance(result.exception, KeyboardInterrupt):
        raise result.exception  # Ctrl-C: the target rolled back, the pipeline stops here
    if result.status == "failed" and action == "run" and (owned or not report.continue_on_failure):
        assert result.exception is not None
        raise result.exception
    return result.summary()


_TIMEOUTS = ("lock_timeout", "statement_timeout")


def _given(spec: TableSpec, **given: Any) -> dict[str, Any]:
    """The options of one sync: given ones, then the table's declared defaults; ``None``
    for the rest (timeouts not given anywhere: ``False``, the environment decides)."""
    if given["mode"] is None:
        given["mode"] = NOT_GIVEN
    for name in OPTION_NAMES:
        if given.get(name, NOT_GIVEN) is NOT_GIVEN:
            given[name] = spec.options.get(name, NOT_GIVEN if name in _TIMEOUTS else None)
    for name in _TIMEOUTS:
        if given[name] is NOT_GIVEN:
            given[name] = False
    return given


def _options(spec: TableSpec, given: dict[str, Any], force_path: str | None) -> TargetOptions:
    if given["mode"] is None:
        raise DefinitionError(
            f"target {spec.qualified_name}: no mode; pass mode='append'|'merge'|'scd1'|"
            "'scd2' (or declare it on the table)"
        )
    return TargetOptions(
        table=spec,
        mode=given["mode"],
        keys=_tuple(given["keys"]),
        compare_columns=_tuple(given["compare_columns"]),
        update_columns=_tuple(given["update_columns"]),
        event_timestamp_column=given["event_timestamp_column"],
        ttl=given["ttl"],
        handle_deletes=given["handle_deletes"],
        incremental_column=given["incremental_column"],
        incremental_lookback=given["incremental_lookback"],
        lock_timeout=given["lock_timeout"],
        statement_timeout=given["statement_timeout"],
        force_path=force_path,
    )


@contextmanager
def _shared_source(
    source: Source, syncs: Sequence[tuple[Any, Any, dict[str, Any]]], force_path: str | None
) -> Iterator[None]:
    """Read ``source`` once for every ``(target, target_connection, options)`` of
    ``syncs`` (see :mod:`ematix_flow._engine.fanout`): the ``sync`` calls made inside,
    with this very ``source`` and those connections, are written from the shared stage.
    Fewer than two targets selected in this run, a backfill window, or targets whose
    options cannot be resolved: nothing is shared, each sync reads the source itself."""
    from ematix_flow._engine.fanout import Member, share
    from ematix_flow.source import resolve_connection

    steer = _steer.get()
    members = []
    for target, connection, opts in syncs:
        spec = table_spec(target)
        if steer is not None and not steer.applies_to(spec.qualified_name):
            continue
        try:
            options = _options(spec, _given(spec, **{"mode": None, **opts}), force_path)
        except EmatixFlowError:
            members = []
            break
        if isinstance(connection, str):
            connection = resolve_connection(connection)
        members.append(Member(options, connection))
    if len(members) < 2 or (steer is not None and steer.window is not None):
        yield
        return
    from ematix_flow._engine.state import state_schema
    from ematix_flow._engine.steer import KEEP

    with share(
        source,
        members,
        pipeline=_report.get().pipeline if _report.get() is not None else AD_HOC,
        state_schema=state_schema(),
        fill=_action.get() != "preview",
        bounded=steer is None or (not steer.full_refresh and steer.watermark == KEEP),
        timeouts=members[0].options.timeouts,
    ) as stages:
        token = _shared.set((source, stages))
        try:
            yield
        finally:
            _shared.reset(token)


def _tell(event: Progress, **changes: Any) -> None:
    tell = _progress.get()
    if tell is not None:
        tell(replace(event, **changes) if changes else event)


def not_run(*, target: Any, target_connection: Any, mode: str, reason: str) -> None:
    """Record that ``target`` was not run in the current run (an earlier target failed
    and the pipeline halts on the first failure): a ``not_run`` result in the report
    and, for a real run, a ``not_run`` row in the target's run history."""
    report = _report.get()
    if report is None:
        return
    spec = table_spec(target)
    report.results.append(
        TargetResult(
            pipeline=report.pipeline,
            target=spec.qualified_name,
            mode=mode,
            status="not_run",
            error=reason,
            dry_run=report.action == "dry_run",
        )
    )
    if report.action == "run":
        record_failure(
            target_connection,
            pipeline=report.pipeline,
            target=spec.qualified_name,
            mode=mode,
            error=reason,
            status="not_run",
        )


def _warn(report: RunReport, messages: Sequence[str]) -> None:
    for message in messages:
        if message not in report._warned:
            report._warned.add(message)
            warnings.warn(message, UserWarning, stacklevel=4)


def _tuple(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value)


# --- registry ------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetInfo:
    """What a pipeline writes, for ``flow list`` and the Kubernetes export."""

    table: str
    mode: str | None = None
    keys: tuple[str, ...] | None = None
    connection: str | None = None
    #: The incremental column and the type its watermark is compared in, when known.
    incremental_column: str | None = field(default=None, compare=False)
    incremental_type: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "mode": self.mode,
            "keys": list(self.keys) if self.keys else None,
            "connection": self.connection,
        }


@dataclass(frozen=True)
class ScheduledPipeline:
    """A registered pipeline: recorded by :func:`register`, run by :func:`run`."""

    name: str
    schedule: str | None
    func: Callable[[], Any] = field(repr=False, compare=False)
    module: str
    qualname: str
    targets: tuple[TargetInfo, ...] = ()
    connections: tuple[str, ...] = ()
    continue_on_failure: bool = False
    #: IANA zone whose wall clock the schedule is read on (``None``: UTC).
    timezone: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "module": self.module,
            "function": self.qualname,
            "targets": [t.to_dict() for t in self.targets],
            "connections": list(self.connections),
            "continue_on_failure": self.continue_on_failure,
        }


_REGISTRY: dict[str, ScheduledPipeline] = {}


def _target_info(item: Any, where: str) -> TargetInfo:
    if isinstance(item, TargetInfo):
        return item
    table = getattr(item, "table", None)
    if table is not None and not isinstance(item, type):
        # ematix.target(...) or anything shaped like it
        spec = table_spec(table)
        mode = getattr(item, "mode", None)
        keys = getattr(item, "keys", None)
        conn = getattr(item, "target_connection", None)
        return TargetInfo(
            spec.qualified_name,
            mode if isinstance(mode, str) else spec.options.get("mode"),
            tuple(keys) if isinstance(keys, (tuple, list)) else None,
            conn if isinstance(conn, str) else None,
        )
    try:
        spec = table_spec(item)
    except DefinitionError as exc:
        raise DefinitionError(f"{where}: targets= item {item!r} is not a table: {exc}") from None
    mode = spec.options.get("mode")
    return TargetInfo(spec.qualified_name, mode if isinstance(mode, str) else None)


def validate_schedule(schedule: str, where: str) -> str:
    from croniter import croniter

    # croniter also takes six or seven fields (seconds, years); cron and Kubernetes
    # CronJobs take five, or a macro such as @hourly.
    fields = schedule.split() if isinstance(schedule, str) else []
    five_or_macro = len(fields) == 5 or (len(fields) == 1 and schedule.startswith("@"))
    if not five_or_macro or not croniter.is_valid(schedule):
        raise DefinitionError(
            f"{where}: schedule {schedule!r} is not a valid cron expression; use five "
            "fields 'minute hour day-of-month month day-of-week', e.g. '0 * * * *' (hourly)"
        )
    return schedule


def register(
    *,
    name: str,
    schedule: str | None = None,
    targets: Sequence[Any] = (),
    connections: Sequence[str] = (),
    continue_on_failure: bool = False,
    timezone: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as pipeline ``name`` (validated now, run later).

    ``schedule`` is read on the wall clock of ``timezone`` (an IANA name such as
    ``"Europe/Paris"``; UTC when not given), by ``flow run-due`` and by the CronJob
    ``flow export-k8s`` writes.

    Example::

        @pipeline.register(name="customer_sync", schedule="0 6 * * *",
                           timezone="Europe/Paris", connections=("warehouse",))
        def customer_sync():
            return pipeline.sync(...)
    """
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError(f"pipeline.register: name= must be a non-empty string, got {name!r}")
    where = f"pipeline {name}"
    if schedule is not None:
        validate_schedule(schedule, where)
    if timezone is not None:
        from ematix_flow._schedule import validate_timezone

        validate_timezone(timezone, where)
        if schedule is None:
            raise DefinitionError(
                f"{where}: timezone={timezone!r} is the zone of a schedule, and there is "
                'no schedule=; add one (e.g. schedule="0 6 * * *") or leave timezone= out'
            )
    infos = tuple(_target_info(t, where) for t in targets)
    if isinstance(connections, str):
        connections = (connections,)
    conns = tuple(connections)
    for c in conns:
        if not isinstance(c, str) or not c:
            raise DefinitionError(f"{where}: connections= takes connection names, got {c!r}")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(func):
            raise DefinitionError(f"{where}: @pipeline.register decorates a function")
        entry = ScheduledPipeline(
            name=name,
            schedule=schedule,
            func=func,
            module=getattr(func, "__module__", "?"),
            qualname=getattr(func, "__qualname__", repr(func)),
            targets=infos,
            connections=conns,
            continue_on_failure=bool(continue_on_failure),
            timezone=timezone,
        )
        old = _REGISTRY.get(name)
        if old is not None and (old.module, old.qualname) != (entry.module, entry.qualname):
            raise DefinitionError(
                f"pipeline name {name!r} is registered twice: by {old.module}.{old.qualname} "
                f"and by {entry.module}.{entry.qualname}; pipeline names must be unique"
            )
        _REGISTRY[name] = entry  # the same function re-imported replaces itself
        return func

    return decorate


def registry() -> dict[str, ScheduledPipeline]:
    """Every registered pipeline by name (a copy, sorted by name)."""
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> ScheduledPipeline:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise PipelineNotFoundError(
            f"no pipeline named {name!r} is registered (known: {known}); check the name "
            "and that --module imports the module defining it"
        ) from None


def _unregister(name: str) -> None:
    """Remove a pipeline (tests)."""
    _REGISTRY.pop(name, None)


def _invoke(
    entry: ScheduledPipeline,
    action: str,
    progress: Callable[[Progress], None] | None = None,
    due_slot: datetime | None = None,
    *,
    steer: Steer | None = None,
) -> RunReport:
    report = RunReport(
        pipeline=entry.name,
        action=action,
        continue_on_failure=entry.continue_on_failure,
        due_slot=due_slot,
    )
    token = _progress.set(progress)
    steered = _steer.set(steer)
    try:
        with _running(report), run_scope():
            _call(entry, report)
    finally:
        _steer.reset(steered)
        _progress.reset(token)
    return report


def _call(entry: ScheduledPipeline, report: RunReport) -> None:
    try:
        out = entry.func()
        if inspect.isawaitable(out):
            asyncio.run(_await(out))
    except EmatixFlowError as exc:
        # A failed target already sits in the report; anything else is the body's error.
        if not any(r.exception is exc for r in report.results):
            report.error = str(exc)
            report.exception = exc
    except Exception as exc:
        report.error = f"pipeline {entry.name} raised {type(exc).__name__}: {exc}"


async def _await(value: Any) -> Any:
    return await value


def run(
    name: str,
    *,
    progress: Callable[[Progress], None] | None = None,
    due_slot: datetime | None = None,
    full_refresh: bool = False,
    discard_history: bool = False,
    target: str | None = None,
) -> RunReport:
    """Run pipeline ``name`` now: every target committed (or failed) on its own.

    ``progress`` is told what the run is doing (:class:`Progress`: a target starts, each
    step, the rows a cross-DB copy has streamed, a target's outcome); ``str()`` of
    each is a short text. Ctrl-C (``KeyboardInterrupt``) rolls the running target back,
    records it ``interrupted`` in its run history and is raised again.
    ``due_slot`` is the schedule slot a ``flow run-due`` found due: a target whose
    history shows a non-skipped run started at or after it (checked under the target's
    lock) is recorded as skipped ("already ran for slot …") instead of run again.

    ``full_refresh=True`` rebuilds each target from the whole source in its one
    transaction (readers see the old rows until it commits), ignoring and then
    re-storing the watermark; an scd2 target also needs ``discard_history=True``.
    ``target="schema.table"`` runs that target alone.

    Example::

        pipeline.run("customer_sync", full_refresh=True, target="warehouse.customer")
    """
    entry = get(name)
    steer = _steer_for(entry, "full_refresh" if full_refresh else "run", target, discard_history)
    return _invoke(entry, "run", progress, due_slot, steer=steer)


def dry_run(
    name: str,
    *,
    full_refresh: bool = False,
    discard_history: bool = False,
    target: str | None = None,
) -> RunReport:
    """Execute every target of ``name`` inside a transaction and roll it back."""
    return _steered(name, "dry_run", full_refresh, discard_history, target)


def preview(
    name: str,
    *,
    full_refresh: bool = False,
    discard_history: bool = False,
    target: str | None = None,
) -> RunReport:
    """Plan every target of ``name`` without writing anything."""
    return _steered(name, "preview", full_refresh, discard_history, target)


def _steered(
    name: str, action: str, full_refresh: bool, discard_history: bool, target: str | None
) -> RunReport:
    entry = get(name)
    steer = _steer_for(entry, "full_refresh" if full_refresh else "run", target, discard_history)
    return _invoke(entry, action, steer=steer)


def _steer_for(
    entry: ScheduledPipeline,
    action: str,
    target: str | None,
    discard_history: bool = False,
    **more: Any,
) -> Steer | None:
    if action == "run" and target is None and not more:
        return None
    return Steer(
        action=action,
        targets=None if target is None else frozenset({_check_target(entry, target).table}),
        discard_history=discard_history,
        **more,
    )


def _check_target(entry: ScheduledPipeline, target: str) -> TargetInfo:
    for info in entry.targets:
        if info.table == target:
            return info
    known = ", ".join(i.table for i in entry.targets) or "none declared"
    raise ConfigurationError(
        f"pipeline {entry.name} has no target {target!r}; its targets are {known} "
        "(name one as schema.table)"
    )


# --- steering the state: show, reset, backfill ------------------------------------------


def _target_connection(entry: ScheduledPipeline, info: TargetInfo) -> Any:
    from ematix_flow.config import connect

    if info.connection is None:
        raise ConfigurationError(
            f"pipeline {entry.name}: target {info.table} does not name its connection "
            "(register it with TargetInfo(connection=...)), so its state cannot be read"
        )
    return connect(info.connection)


def _targets(entry: ScheduledPipeline, target: str | None) -> tuple[TargetInfo, ...]:
    return (_check_target(entry, target),) if target is not None else entry.targets


def state(name: str, *, target: str | None = None) -> list[Any]:
    """What is stored for each target of pipeline ``name``: the watermark (typed, with
    its column), the last run, the last success and the run counts.

    Example::

        for s in pipeline.state("customer_sync"):
            print(s.target, s.watermark, s.last_success_at)
    """
    from ematix_flow._engine import state as st

    entry = get(name)
    out = []
    for info in _targets(entry, target):
        conn = _target_connection(entry, info)
        with conn.open(autocommit=True, connect_timeout=10) as pg:
            out.append(st.read_target_state(pg, st.state_schema(), name, info.table, info.mode))
    return out


@dataclass(frozen=True)
class StateAction:
    """What a reset did (or, previewed, would do) to one target."""

    target: str
    incremental_column: str | None
    watermark_before: str | None
    watermark_after: str | None
    executed: bool
    source_sql: str | None = None
    estimated_rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def reset_state(
    name: str, *, target: str | None = None, to: str | None = None, preview: bool = False
) -> list[StateAction]:
    """Clear (``to=None``) or set the watermark of each target of ``name`` (or of
    ``target``); ``to`` is parsed in the incremental column's type. Takes each target's
    lock (refused while a run holds it) and records a ``reset`` row in its history.

    ``preview=True`` changes nothing and says what the next run would read: the
    filtered source SQL and the planner's estimate of its rows.

    Example::

        pipeline.reset_state("orders_sync", to="2026-01-01 00:00:00+00", preview=True)
    """
    from ematix_flow._engine import state as st
    from ematix_flow._engine.steer import Steer as _Steer

    entry = get(name)
    infos = _targets(entry, target)
    if preview and to is not None:
        # parse it now, as the reset would (a value that does not parse is refused)
        for info in infos:
            conn = _target_connection(entry, info)
            with conn.open(autocommit=True, connect_timeout=10) as pg:
                stored = (
                    st.read_watermark(pg, st.state_schema(), entry.name, info.table)
                    if st.state_exists(pg, st.state_schema())
                    else None
                )
                to = st.canonical_value(
                    pg,
                    to,
                    column=stored.column if stored else info.incremental_column,
                    type_sql=(stored.column_type if stored else None) or info.incremental_type,
                    where=f"Pipeline {entry.name}, target {info.table}",
                )
    if preview:
        report = _invoke(
            entry,
            "preview",
            steer=_Steer(action="run", targets=frozenset(i.table for i in infos), watermark=to),
        )
        if report.error:
            raise report.exception or PipelineNotFoundError(report.error)
        out = []
        for r in report.results:
            if r.plan is None:
                continue
            p = r.plan
            sql_text, rows = _next_read(p, to)
            out.append(
                StateAction(
                    target=r.target,
                    incremental_column=p.incremental_column,
                    watermark_before=p.watermark_stored,
                    watermark_after=p.watermark_before,
                    executed=False,
                    source_sql=sql_text,
                    estimated_rows=rows,
                )
            )
        return out
    out = []
    with run_scope():  # one reset of several targets is one entry of the history
        for info in infos:
            conn = _target_connection(entry, info)
            with conn.open(autocommit=True, connect_timeout=10) as pg:
                before, after, column = st.reset_watermark(
                    pg,
                    st.state_schema(),
                    pipeline=entry.name,
                    target=info.table,
                    mode=info.mode,
                    column=info.incremental_column,
                    column_type=info.incremental_type,
                    to=to,
                )
            out.append(StateAction(info.table, column, before, after, executed=True))
    return out


def _next_read(p: Any, watermark: str | None) -> tuple[str, int | None]:
    """The SQL that reads the source with ``watermark`` stored, and its estimated rows."""
    from ematix_flow._engine.estimate import estimate_source_rows

    return estimate_source_rows(p, watermark)


def backfill(
    name: str,
    start: Any,
    end: Any,
    *,
    step: Any = None,
    target: str | None = None,
    preview: bool = False,
    dry_run: bool = False,
    progress: Callable[[Progress], None] | None = None,
) -> list[RunReport]:
    """Reprocess the rows with ``start <= incremental_column < end``, in windows of
    ``step`` (a ``timedelta`` or "1d"/"6h"/"30m" for a date/time column, a number for a
    numeric one; one window when not given). Each window runs as its own run — every
    target one transaction — recorded as a ``backfill`` history row; a window a target
    already completed (same bounds, succeeded) is not run again, so a backfill that
    failed or was killed resumes where it stopped. The stored watermark moves only when
    a window passes it. Keyed modes rewrite rows idempotently; append needs a declared
    key (rows already loaded are skipped).

    Example::

        pipeline.backfill("orders_sync", "2026-01-01", "2026-01-08", step="1d")
    """
    from ematix_flow._engine.backfill import windows
    from ematix_flow._engine.steer import Steer as _Steer

    entry = get(name)
    infos = _targets(entry, target)
    action = "preview" if preview else "dry_run" if dry_run else "run"
    reports = []
    for lo, hi in windows(start, end, step):
        todo = frozenset(i.table for i in infos)
        if action == "run":
            todo = frozenset(i.table for i in infos if not _window_done(entry, i, lo, hi))
            if not todo:
                if progress is not None:
                    progress(Progress("window_done", entry.name, text=f"[{lo}, {hi})"))
                continue
        if progress is not None:
            progress(Progress("window", entry.name, text=f"[{lo}, {hi})"))
        steer = _Steer(action="backfill", targets=todo, window=(lo, hi))
        report = _invoke(entry, action, progress, steer=steer)
        reports.append(report)
        if action == "run" and report.failed:
            break
    return reports


def _window_done(entry: ScheduledPipeline, info: TargetInfo, lo: str, hi: str) -> bool:
    from ematix_flow._engine import state as st

    if info.connection is None:
        return False  # unknown where it lives: run it again (every window is idempotent)
    conn = _target_connection(entry, info)
    with conn.open(autocommit=True, connect_timeout=10) as pg:
        return st.backfill_done(pg, st.state_schema(), entry.name, info.table, lo, hi)
