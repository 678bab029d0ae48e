"""``flow list | run | run-due | history`` — registered pipelines from the command line.

Each command imports the user's module (``--module M``, as ``python -c "import M"``
would from the current directory, or ``--module path/to/m.py``; see :mod:`._loader`),
then calls :mod:`ematix_flow.pipeline` and renders. Exit codes: OK when every target
succeeded, RUN_FAILED otherwise, CONFIG_ERROR when the module cannot be imported or a
connection is not configured.

``run-due`` rule (safe to call every minute, e.g. from cron or a Kubernetes CronJob):
a pipeline is due when its schedule's most recent slot (at or before now, on the wall
clock of the pipeline's ``timezone=``, UTC when it has none; see
:mod:`ematix_flow._schedule` for daylight-saving changes) is later than the start of
its last recorded run that was not skipped. The last run is read from ``run_history``
where the pipeline's targets live (their connections; ``connections=`` of
``register`` when the targets do not name theirs, else the ``default`` connection) —
the source's connection is never opened. However many slots were missed, one run
catches up. A pipeline with no recorded run is due: its most recent slot is by
definition within the last schedule interval, and the first run is the initial load.

A failed run counts as the slot's run: the pipeline waits for its next slot (retrying
a broken run every minute would only repeat the error). With ``--retry-failed`` a last
run in which a target failed makes the pipeline due again at once.

"Due" is decided before the run takes its target locks, so the run re-checks it under
each lock: when another run of the slot committed in between (two overlapping run-due
processes), the target is recorded ``skipped`` ("already ran for slot …").
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ematix_flow._cli._loader import load_module
from ematix_flow._cli._output import (
    FormatOption,
    OutputFormat,
    console,
    count,
    print_error,
    print_json,
    print_listing,
    utc,
)
from ematix_flow._cli._progress import LogFormat, LogFormatOption, RunDisplay
from ematix_flow._errors import ConfigurationError
from ematix_flow._exitcodes import ExitCode

if TYPE_CHECKING:
    from ematix_flow._metrics import RunRecord
    from ematix_flow.pipeline import RunReport, ScheduledPipeline

__all__ = ["history", "list_", "load_module", "report_errors", "run", "run_due"]

ModuleOption = Annotated[
    str,
    typer.Option(
        "--module",
        "-m",
        envvar="EMATIX_FLOW_MODULE",
        help="Python module defining the pipelines, imported from the current directory.",
    ),
]


MetricsFileOption = Annotated[
    Path | None,
    typer.Option(
        "--metrics-file",
        envvar="EMATIX_FLOW_METRICS_FILE",
        metavar="PATH",
        help="Also write the run's metrics to PATH, in node_exporter's textfile-collector "
        "format (replaced atomically; other pipelines' series kept).",
    ),
]
PushgatewayOption = Annotated[
    str | None,
    typer.Option(
        "--pushgateway",
        envvar="EMATIX_FLOW_PUSHGATEWAY",
        metavar="URL",
        help="Also push-add the run's metrics to this Prometheus Pushgateway "
        "(job ematix_flow, grouped by pipeline).",
    ),
]


def _export_metrics(
    records: list[RunRecord], metrics_file: Path | None, pushgateway: str | None
) -> None:
    # Metrics are a side channel: a file or gateway that fails is reported on stderr
    # and never changes the exit code.
    if not records or not (metrics_file or pushgateway):
        return
    from ematix_flow import _metrics

    if metrics_file:
        _metrics.write_textfile(metrics_file, records)
    if pushgateway:
        _metrics.push(pushgateway, records)


def _timed_run(
    name: str, display: RunDisplay, due_slot: datetime | None = None, **steer: Any
) -> tuple[RunReport, RunRecord]:
    from ematix_flow import pipeline
    from ematix_flow._metrics import RunRecord

    started = time.time()
    with display.interruptible(), display.showing():
        report = pipeline.run(name, progress=display, due_slot=due_slot, **steer)
    return report, RunRecord(report, started=started, finished=time.time())


def list_(module: ModuleOption, output: FormatOption = OutputFormat.text) -> None:
    """List the pipelines a module registers: schedule, targets, connections.

    Example: flow list -m my_pipelines
    """
    from ematix_flow import pipeline

    load_module(module)

    def row(e: ScheduledPipeline) -> tuple[str, ...]:
        targets = ", ".join(t.table + (f" ({t.mode})" if t.mode else "") for t in e.targets)
        schedule = e.schedule or "—"
        if e.schedule:
            schedule += f" ({e.timezone or 'UTC'})"
        return e.name, schedule, targets or "—", ", ".join(e.connections) or "—"

    print_listing(
        list(pipeline.registry().values()),
        output,
        to_json=lambda e: e.to_dict(),
        columns=("PIPELINE", "SCHEDULE", "TARGETS", "CONNECTIONS"),
        row=row,
        empty=f"No pipelines registered by module {module}.",
        wrap=("PIPELINE", "TARGETS", "CONNECTIONS"),
    )


def _render_report(report: RunReport) -> None:
    from rich.text import Text

    out = console()
    for r in report.results:
        mark = {"succeeded": "✓", "skipped": "-", "planned": "·", "not_run": "·"}.get(r.status, "✗")
        style = {"succeeded": "green", "skipped": "yellow", "not_run": "yellow"}.get(
            r.status, "red"
        )
        line = Text(f"{mark} ", style=style) + Text(f"{r.target}  {r.mode}  {r.path or '—'}  ")
        if r.status == "succeeded":
            expired = f"  expired {count(r.rows_expired)}" if r.rows_expired else ""
            line += Text(
                f"inserted {count(r.rows_inserted)}  updated {count(r.rows_updated)}  deleted "
                f"{count(r.rows_deleted)}  unchanged {count(r.rows_unchanged)}{expired}  "
                f"{r.duration_s:.2f}s"
            )
        elif r.status == "failed":
            line += Text("failed")
        else:
            line += Text(f"{r.status}: {r.error or ''}")
        out.print(line)
    if not report.results and not report.error:
        out.print(f"pipeline {report.pipeline} synced no target", markup=False)


def report_errors(report: RunReport, *, skipped_fails: bool = False) -> None:
    """Each failure of ``report`` as an ``error:`` line on stderr: the pipeline's own
    error, then each failed target's (the stdout report marks those targets ✗), and with
    ``skipped_fails`` (``flow run``: every target must run) each skipped target's."""
    if report.error:
        print_error(report.error)
    for r in report.results:
        if r.status == "failed":
            print_error(r.error or f"pipeline {report.pipeline}: target {r.target} failed")
        elif r.status == "skipped" and skipped_fails:
            print_error(f"pipeline {report.pipeline}, target {r.target}: skipped: {r.error}")


def _write_summary(report: RunReport) -> None:
    if not os.environ.get("EMATIX_FLOW_TERMINATION_MESSAGE_PATH"):
        return
    try:
        from ematix_flow._k8s.summary import write_termination_summary
    except ImportError:
        return
    write_termination_summary(report)


def run(
    name: Annotated[str, typer.Argument(help="The registered pipeline to run.")],
    module: ModuleOption,
    output: FormatOption = OutputFormat.text,
    metrics_file: MetricsFileOption = None,
    pushgateway: PushgatewayOption = None,
    full_refresh: Annotated[
        bool,
        typer.Option(
            "--full-refresh",
            help="Rebuild each target from the whole source in one transaction (readers "
            "see the old rows until it commits); the watermark is stored anew.",
        ),
    ] = False,
    discard_history: Annotated[
        bool,
        typer.Option(
            "--discard-history",
            help="With --full-refresh: an scd2 target loses its history (required for scd2).",
        ),
    ] = False,
    target: Annotated[
        str | None,
        typer.Option("--target", metavar="SCHEMA.TABLE", help="Run this target only."),
    ] = None,
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Run one pipeline now; exit 0 only when every target succeeded.

    Example: flow run customer_sync -m my_pipelines
    """
    load_module(module)
    from ematix_flow import pipeline

    pipeline.get(name)
    if discard_history and not full_refresh:
        raise ConfigurationError("--discard-history goes with --full-refresh")
    report, record = _timed_run(
        name,
        RunDisplay(log_format),
        full_refresh=full_refresh,
        discard_history=discard_history,
        target=target,
    )
    _write_summary(report)
    _export_metrics([record], metrics_file, pushgateway)
    if output is OutputFormat.json:
        print_json(report.to_dict())
    else:
        _render_report(report)
    report_errors(report, skipped_fails=True)
    if not report.ok:
        code = ExitCode.CONFIG_ERROR if report.configuration_failed else ExitCode.RUN_FAILED
        raise typer.Exit(int(code))


def history_connections(entry: ScheduledPipeline) -> tuple[str, ...]:
    """Where the run history of ``entry`` lives: its targets' connections. Targets that
    do not name theirs (``pipeline.register`` with plain tables) fall back to
    ``connections=``, else the ``default`` connection. The source's connection is not
    one of them unless a target lives there too."""
    named = [t.connection for t in entry.targets if t.connection]
    if entry.targets and len(named) == len(entry.targets):
        return tuple(dict.fromkeys(named))
    return tuple(dict.fromkeys([*named, *entry.connections])) or ("default",)


@dataclass(frozen=True)
class LastRun:
    """The latest recorded (not skipped) run of a pipeline, across its connections."""

    #: When its first and its last target started.
    started: datetime
    last_started: datetime
    #: A target of it did not succeed.
    failed: bool


def last_run(entry: ScheduledPipeline) -> LastRun | None:
    """The latest non-skipped run of ``entry`` across its history's connections."""
    from ematix_flow._engine import state
    from ematix_flow.config import connect

    found = []
    for name in history_connections(entry):
        with connect(name).open(autocommit=True, connect_timeout=10) as pg:
            outcome = state.read_last_run_outcome(pg, state.state_schema(), entry.name)
        if outcome is not None:
            found.append(outcome)
    if not found:
        return None
    latest = max(found, key=lambda o: o[1])
    # The same run, seen from each connection holding one of its targets.
    same = [o for o in found if latest[2] is not None and o[2] == latest[2]] or [latest]
    return LastRun(
        started=min(o[0] for o in same),
        last_started=max(o[1] for o in same),
        failed=any(o[3] for o in same),
    )


def _slot_text(entry: ScheduledPipeline, slot: datetime) -> str:
    from ematix_flow._schedule import zone

    text = f"{utc(slot, seconds=False)} UTC"
    if entry.timezone and entry.timezone != "UTC":
        text += f" ({slot.astimezone(zone(entry.timezone)):%Y-%m-%d %H:%M} {entry.timezone})"
    return text


@dataclass(frozen=True)
class Due:
    """What ``run-due`` decided for one pipeline."""

    due: bool
    reason: str
    #: The slot the run serves: re-checked under each target's lock.
    slot: datetime | None = None


def due(entry: ScheduledPipeline, now: datetime, *, retry_failed: bool = False) -> Due:
    """Whether ``entry`` is due at ``now``, and why (see the module docstring)."""
    from datetime import timedelta

    from ematix_flow._schedule import latest_slot, next_slot

    assert entry.schedule is not None
    slot = latest_slot(entry.schedule, entry.timezone, now)
    last = last_run(entry)
    if last is None:
        return Due(True, f"no recorded run; latest slot {_slot_text(entry, slot)}", slot)
    ran = f"the last run {utc(last.started)} UTC"
    if last.started < slot:
        return Due(True, f"slot {_slot_text(entry, slot)} came due after {ran}", slot)
    if last.failed and retry_failed:
        # Served by any run that starts after the failed one (another run-due retrying).
        retry = last.last_started + timedelta(microseconds=1)
        return Due(True, f"{ran} failed; --retry-failed runs it again", retry)
    nxt = _slot_text(entry, next_slot(entry.schedule, entry.timezone, now))
    if last.failed:
        return Due(False, f"{ran} failed; next slot {nxt} (--retry-failed runs it now)")
    return Due(False, f"last run {utc(last.started)} UTC; next slot {nxt}")


def run_due(
    module: ModuleOption,
    output: FormatOption = OutputFormat.text,
    metrics_file: MetricsFileOption = None,
    pushgateway: PushgatewayOption = None,
    log_format: LogFormatOption = LogFormat.text,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="A pipeline whose last run failed is due again now, not at its next slot.",
        ),
    ] = False,
) -> None:
    """Run every pipeline whose schedule came due since its last recorded run.

    Schedules are read in each pipeline's timezone= (UTC without one).
    A failed run counts as its slot's run: the pipeline waits for its next
    slot, unless --retry-failed. Exits 0 unless something failed: a target
    skipped because another run holds it, or already served its slot, is
    not a failure.

    Example: flow run-due -m my_pipelines --retry-failed
    """
    from rich.text import Text

    from ematix_flow import pipeline
    from ematix_flow._errors import EmatixFlowError

    load_module(module)
    now = datetime.now(UTC)
    ok = True
    config_error = False
    items: list[dict[str, Any]] = []
    records: list[RunRecord] = []
    out = console()
    display = RunDisplay(log_format)
    for entry in pipeline.registry().values():
        if entry.schedule is None:
            continue
        try:
            decided = due(entry, now, retry_failed=retry_failed)
        except EmatixFlowError as exc:
            ok = False
            config_error = config_error or isinstance(exc, ConfigurationError)
            items.append({"pipeline": entry.name, "due": None, "reason": str(exc), "report": None})
            print_error(f"pipeline {entry.name}: cannot tell when it last ran: {exc}")
            continue
        item: dict[str, Any] = {
            "pipeline": entry.name,
            "due": decided.due,
            "reason": decided.reason,
        }
        if output is OutputFormat.text:
            state = "due" if decided.due else "not due"
            out.print(Text(f"{entry.name}: {state} ({decided.reason})"))
        if decided.due:
            # The run re-checks, under each target's lock, that no other run served
            # this slot in the meantime (two overlapping run-due processes).
            report, record = _timed_run(entry.name, display, due_slot=decided.slot)
            records.append(record)
            ok = ok and not report.failed
            config_error = config_error or report.configuration_failed
            item["report"] = report.to_dict()
            if output is OutputFormat.text:
                _render_report(report)
            report_errors(report)
        else:
            item["report"] = None
        items.append(item)
    _export_metrics(records, metrics_file, pushgateway)
    if output is OutputFormat.json:
        print_json(items)
    elif not items:
        out.print(
            f"No pipeline of module {module} has a schedule: nothing to run. Give one a "
            'schedule, e.g. @ematix.pipeline(..., schedule="0 * * * *").',
            markup=False,
        )
    if not ok:
        raise typer.Exit(int(ExitCode.CONFIG_ERROR if config_error else ExitCode.RUN_FAILED))


def history(
    name: Annotated[str, typer.Argument(help="The registered pipeline.")],
    module: ModuleOption,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", "-n", min=1, help="Most recent runs (a run: every target of one fire)."
        ),
    ] = 20,
    output: FormatOption = OutputFormat.text,
) -> None:
    """Show a pipeline's recent runs, newest first: a row per target, times in UTC.

    A run's start is on its first row. Read from the run history where its
    targets live.

    Example: flow history customer_sync -m my_pipelines -n 5
    """
    from ematix_flow import pipeline
    from ematix_flow._engine import state
    from ematix_flow.config import connect

    load_module(module)
    entry = pipeline.get(name)
    runs: dict[object, list[Any]] = {}
    for conn_name in history_connections(entry):
        with connect(conn_name).open(autocommit=True, connect_timeout=10) as pg:
            for r in state.read_history(pg, state.state_schema(), name, limit):
                runs.setdefault(r.run_id or object(), []).append(r)
    newest = sorted(runs.values(), key=lambda rs: min(r.started_at for r in rs), reverse=True)
    # One run's rows together, in the order its targets ran; its start on its first row.
    rows = [
        (i == 0, r)
        for group in newest[:limit]
        for i, r in enumerate(sorted(group, key=lambda r: r.started_at))
    ]
    print_listing(
        rows,
        output,
        to_json=lambda fr: fr[1].to_dict(),
        columns=(
            "STARTED (UTC)",
            "TARGET",
            "MODE",
            "STATUS",
            "INS",
            "UPD",
            "DEL",
            "UNCH",
            "SECS",
            "ERROR",
        ),
        row=lambda fr: (
            utc(fr[1].started_at) if fr[0] else "",
            fr[1].target,
            fr[1].mode or "",
            fr[1].status,
            *(
                count(v)
                for v in (
                    fr[1].rows_inserted,
                    fr[1].rows_updated,
                    fr[1].rows_deleted,
                    fr[1].rows_unchanged,
                )
            ),
            f"{fr[1].duration_s:.2f}" if fr[1].duration_s is not None else "",
            Text_(fr[1].error),
        ),
        empty=f"No recorded runs of pipeline {name}.",
        wrap=("TARGET", "ERROR"),
    )


def Text_(value: str | None) -> Any:
    from rich.text import Text

    return Text(value or "")
