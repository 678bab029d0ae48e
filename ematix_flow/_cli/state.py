"""``flow state show|reset`` and ``flow backfill``: a hand on a pipeline's stored state.

Each command parses, calls the public API (``pipeline.state``, ``pipeline.reset_state``,
``pipeline.backfill``) and renders. Every action takes the target's lock (it never
races a running Job), is recorded in the target's run history, and can be previewed
first (``--preview``: nothing is executed).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ematix_flow._cli._output import (
    FormatOption,
    OutputFormat,
    console,
    count,
    fail,
    print_json,
    print_listing,
    utc,
)
from ematix_flow._cli._progress import LogFormat, LogFormatOption, RunDisplay
from ematix_flow._cli.run import ModuleOption, load_module, report_errors
from ematix_flow._exitcodes import ExitCode

__all__ = ["app", "backfill"]

app = typer.Typer(
    name="state",
    help="Show or reset what a pipeline stores per target (watermarks, run counts)."
    "\n\nExample: flow state show orders_sync -m my_pipelines",
    no_args_is_help=True,
)

TargetOption = Annotated[
    str | None,
    typer.Option("--target", metavar="SCHEMA.TABLE", help="This target only."),
]


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The registered pipeline.")],
    module: ModuleOption,
    target: TargetOption = None,
    output: FormatOption = OutputFormat.text,
) -> None:
    """Show each target's stored watermark, last run, last success and run counts.

    Example: flow state show orders_sync -m my_pipelines
    """
    from ematix_flow import pipeline

    load_module(module)
    states = pipeline.state(name, target=target)
    print_listing(
        states,
        output,
        to_json=lambda s: s.to_dict(),
        columns=(
            "TARGET",
            "MODE",
            "COLUMN",
            "WATERMARK",
            "LAST RUN (UTC)",
            "STATUS",
            "LAST SUCCESS (UTC)",
            "RUNS",
            "FAILED",
        ),
        row=lambda s: (
            s.target,
            s.mode or "",
            f"{s.incremental_column} ({s.column_type})" if s.incremental_column else "—",
            s.watermark if s.watermark is not None else "—",
            utc(s.last_run_at),
            s.last_status or "",
            utc(s.last_success_at),
            count(s.runs),
            count(s.failures),
        ),
        empty=f"Pipeline {name} has no targets.",
        wrap=("TARGET", "COLUMN", "WATERMARK"),
    )


@app.command("reset")
def reset(
    name: Annotated[str, typer.Argument(help="The registered pipeline.")],
    module: ModuleOption,
    target: TargetOption = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="VALUE",
            help="Set the watermark to VALUE (in the incremental column's type) instead of "
            "clearing it.",
        ),
    ] = None,
    preview_: Annotated[
        bool,
        typer.Option("--preview", help="Show what the next run would read; change nothing."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    output: FormatOption = OutputFormat.text,
) -> None:
    """Clear a pipeline's watermarks, or set them with --to.

    The next run then reads the whole source (or from --to on). Takes each
    target's lock and records a 'reset' row in its history.

    Example: flow state reset orders_sync -m pipes --to 2026-01-01 --preview
    """
    from ematix_flow import pipeline

    load_module(module)
    if not preview_ and not yes:
        what = f"set the watermark to {to!r}" if to is not None else "clear the watermark"
        where = f"target {target}" if target else f"every target of {name}"
        if not sys.stdin.isatty():
            raise fail(
                f"this would {what} of {where}; pass --yes to do it, or --preview to see "
                "what the next run would read",
                ExitCode.USAGE,
            )
        if not typer.confirm(f"{what[0].upper()}{what[1:]} of {where}?"):
            raise typer.Exit(int(ExitCode.OK))
    actions = pipeline.reset_state(name, target=target, to=to, preview=preview_)
    if output is OutputFormat.json:
        print_json([a.to_dict() for a in actions])
        return
    out = console()
    for a in actions:
        verb = "would read" if not a.executed else "reset"
        out.print(
            f"{a.target}: watermark {a.watermark_before!r} → {a.watermark_after!r} ({verb})",
            markup=False,
        )
        if a.source_sql is not None:
            rows = "unknown" if a.estimated_rows is None else f"about {a.estimated_rows:,}"
            out.print(f"  next run reads {rows} rows:", markup=False)
            for line in a.source_sql.splitlines():
                out.print(f"    {line}", markup=False)


def backfill(
    name: Annotated[str, typer.Argument(help="The registered pipeline.")],
    module: ModuleOption,
    start: Annotated[
        str,
        typer.Option(
            "--from", metavar="X", help="Window start (included): date, timestamp or number."
        ),
    ],
    end: Annotated[str, typer.Option("--to", metavar="Y", help="Window end (excluded).")],
    step: Annotated[
        str | None,
        typer.Option(
            "--step",
            metavar="DURATION|N",
            help="Step size: 1d, 6h, 30m, 45s, 1w, or a number for a numeric column.",
        ),
    ] = None,
    target: TargetOption = None,
    preview_: Annotated[
        bool, typer.Option("--preview", help="Show the windows and their SQL; run nothing.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Execute every window and roll it back.")
    ] = False,
    output: FormatOption = OutputFormat.text,
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Reprocess the rows with X <= incremental_column < Y, window by window.

    One transaction per window and target; resumable (windows already done are
    skipped). The stored watermark moves only when a window passes it.

    Example: flow backfill orders_sync -m pipes --from 2026-01-01 --to 2026-01-08
    """
    from ematix_flow import pipeline

    load_module(module)
    display = RunDisplay(log_format)
    with display.interruptible(), display.showing():
        reports = pipeline.backfill(
            name,
            start,
            end,
            step=step,
            target=target,
            preview=preview_,
            dry_run=dry_run,
            progress=display,
        )
    if output is OutputFormat.json:
        print_json([r.to_dict() for r in reports])
    else:
        out = console()
        for r in reports:
            for t in r.results:
                window = f"[{t.window[0]}, {t.window[1]})" if t.window else ""
                if t.status == "succeeded":
                    detail = (
                        f"inserted {count(t.rows_inserted)}  updated {count(t.rows_updated)}  "
                        f"unchanged {count(t.rows_unchanged)}"
                    )
                elif t.status == "planned" and t.plan is not None:
                    data = [s for s in t.plan.steps if s.kind in ("copy", "data")]
                    detail = "planned: " + "; ".join(s.label for s in data)
                elif t.status == "failed":
                    detail = "failed"
                else:
                    detail = f"{t.status}: {t.error or ''}"
                out.print(f"{window}  {t.target}  {detail}", markup=False)
    for r in reports:
        report_errors(r, skipped_fails=True)
    if any(not r.ok for r in reports):
        code = (
            ExitCode.CONFIG_ERROR
            if any(r.configuration_failed for r in reports)
            else ExitCode.RUN_FAILED
        )
        raise typer.Exit(int(code))
