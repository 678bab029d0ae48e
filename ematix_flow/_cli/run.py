"""``flow list | run | run-due | history`` — registered pipelines from the command line.

Each command imports the user's module (``--module M``, as ``python -c "import M"``
would from the current directory, or ``--module path/to/m.py``; see :mod:`._loader`),
then calls :mod:`ematix_flow.pipeline` and renders. Exit codes: OK when every target
succeeded, RUN_FAILED otherwise, CONFIG_ERROR when the module cannot be imported or a
connection is not configured.

``run-due`` rule (safe to call every minute, e.g. from cron or a Kubernetes CronJob):
a pipeline is due when its schedule's most recent slot (cron evaluated in UTC, at or
before now) is later than the start of its last recorded run that was not skipped. The
last run is read from ``run_history`` in the pipeline's connections (``connections=``
of ``register``, else the ``default`` connection). However many slots were missed, one
run catches up. A pipeline with no recorded run is due: its most recent slot is by
definition within the last schedule interval, and the first run is the initial load.
"Due" is decided before the run takes its target locks, so the run re-checks it under
each lock: when another run of the slot committed in between (two overlapping run-due
processes), the target is recorded ``skipped`` ("already ran for slot …").
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ematix_flow._cli._loader import load_module
from ematix_flow._cli._output import (
    FormatOption,
    OutputFormat,
    console,
    print_error,
    print_json,
    print_listing,
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
    """List the pipelines a module registers: schedule, targets, connections."""
    from ematix_flow import pipeline

    load_module(module)

    def row(e: ScheduledPipeline) -> tuple[str, ...]:
        targets = ", ".join(t.table + (f" ({t.mode})" if t.mode else "") for t in e.targets)
        return e.name, e.schedule or "—", targets or "—", ", ".join(e.connections) or "—"

    print_listing(
        list(pipeline.registry().values()),
        output,
        to_json=lambda e: e.to_dict(),
        columns=("PIPELINE", "SCHEDULE", "TARGETS", "CONNECTIONS"),
        row=row,
        empty=f"No pipelines registered by module {module}.",
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
            expired = f"  expired {r.rows_expired}" if r.rows_expired else ""
            line += Text(
                f"inserted {r.rows_inserted}  updated {r.rows_updated}  deleted "
                f"{r.rows_deleted}  unchanged {r.rows_unchanged}{expired}  {r.duration_s:.2f}s"
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
    """Run one pipeline now; exit 0 only when every target succeeded."""
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


def _connections_of(entry: ScheduledPipeline) -> tuple[str, ...]:
    return entry.connections or ("default",)


def last_run(entry: ScheduledPipeline) -> datetime | None:
    """The latest non-skipped run of ``entry`` across its connections' run history."""
    from ematix_flow._engine import state
    from ematix_flow.config import connect

    latest: datetime | None = None
    for name in _connections_of(entry):
        conn = connect(name)
        with conn.open(autocommit=True, connect_timeout=10) as pg:
            found = state.read_last_run(pg, state.state_schema(), entry.name)
        if found is not None and (latest is None or found > latest):
            latest = found
    return latest


def due(entry: ScheduledPipeline, now: datetime) -> tuple[bool, str]:
    """Whether ``entry`` is due at ``now``, and why (see the module docstring)."""
    from croniter import croniter

    assert entry.schedule is not None
    slot = croniter(entry.schedule, now).get_prev(datetime)
    last = last_run(entry)
    if last is None:
        return True, f"no recorded run; latest slot {slot.isoformat()}"
    if last < slot:
        return True, f"slot {slot.isoformat()} came due after the last run {last.isoformat()}"
    nxt = croniter(entry.schedule, now).get_next(datetime)
    return False, f"last run {last.isoformat()}; next slot {nxt.isoformat()}"


def run_due(
    module: ModuleOption,
    output: FormatOption = OutputFormat.text,
    metrics_file: MetricsFileOption = None,
    pushgateway: PushgatewayOption = None,
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Run every pipeline whose schedule came due since its last recorded run.

    Exits 0 unless something failed: a target skipped because another run holds it,
    or already served its slot, is not a failure."""
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
            is_due, reason = due(entry, now)
        except EmatixFlowError as exc:
            ok = False
            config_error = config_error or isinstance(exc, ConfigurationError)
            items.append({"pipeline": entry.name, "due": None, "reason": str(exc), "report": None})
            print_error(f"pipeline {entry.name}: cannot tell when it last ran: {exc}")
            continue
        item: dict[str, Any] = {"pipeline": entry.name, "due": is_due, "reason": reason}
        if output is OutputFormat.text:
            out.print(Text(f"{entry.name}: {'due' if is_due else 'not due'} ({reason})"))
        if is_due:
            from croniter import croniter

            # The run re-checks, under each target's lock, that no other run served
            # this slot in the meantime (two overlapping run-due processes).
            slot = croniter(entry.schedule, now).get_prev(datetime)
            report, record = _timed_run(entry.name, display, due_slot=slot)
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
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most recent runs.")] = 20,
    output: FormatOption = OutputFormat.text,
) -> None:
    """Show a pipeline's recent runs (newest first) from its connections' run history."""
    from ematix_flow import pipeline
    from ematix_flow._engine import state
    from ematix_flow.config import connect

    load_module(module)
    entry = pipeline.get(name)
    rows: list[Any] = []
    for conn_name in _connections_of(entry):
        with connect(conn_name).open(autocommit=True, connect_timeout=10) as pg:
            rows += state.read_history(pg, state.state_schema(), name, limit)
    rows.sort(key=lambda r: r.started_at, reverse=True)
    print_listing(
        rows[:limit],
        output,
        to_json=lambda r: r.to_dict(),
        columns=(
            "STARTED",
            "TARGET",
            "MODE",
            "STATUS",
            "INS",
            "UPD",
            "DEL",
            "UNCH",
            "SECONDS",
            "ERROR",
        ),
        row=lambda r: (
            r.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r.target,
            r.mode or "",
            r.status,
            *(
                str(v) if v is not None else ""
                for v in (r.rows_inserted, r.rows_updated, r.rows_deleted, r.rows_unchanged)
            ),
            f"{r.duration_s:.2f}" if r.duration_s is not None else "",
            Text_(r.error),
        ),
        empty=f"No recorded runs of pipeline {name}.",
    )


def Text_(value: str | None) -> Any:
    from rich.text import Text

    return Text(value or "")
