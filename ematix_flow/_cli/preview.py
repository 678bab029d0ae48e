"""``flow preview NAME`` and ``flow dry-run NAME`` — the explainer (spec §3.5).

``preview`` plans every target of a registered pipeline and shows each decision with
its reason and the full SQL; it executes nothing. ``dry-run`` executes every statement
of every target inside a transaction and rolls it back, showing the rows each statement
affected; it always goes through every target, whatever ``continue_on_failure`` says.

One target → the verbose plan; several → the compact summary (``-v`` for the full
plans); ``--format json`` → the stable document of :mod:`ematix_flow._preview`.
Exit codes: OK when every target would succeed, RUN_FAILED when one would fail (or a
database could not be reached, so the preview cannot tell), CONFIG_ERROR when the module
cannot be imported or a connection is not configured. The report on stdout says why per
target; stderr gets one ``error:`` line naming the targets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from ematix_flow._cli import _output
from ematix_flow._cli._output import FormatOption, OutputFormat
from ematix_flow._cli.run import ModuleOption, load_module
from ematix_flow._exitcodes import ExitCode

__all__ = ["dry_run", "preview"]

NameArgument = Annotated[str, typer.Argument(help="The registered pipeline.")]
VerboseOption = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="The full plan of every target, not the summary."),
]


def _command(action: str, doc: str) -> Callable[..., None]:
    """The ``flow preview`` / ``flow dry-run`` command: the same arguments and options,
    handed to :func:`_show` with ``action``; ``doc`` is its ``--help``."""

    def command(
        name: NameArgument,
        module: ModuleOption,
        verbose: VerboseOption = False,
        output: FormatOption = OutputFormat.text,
        full_refresh: Annotated[
            bool,
            typer.Option(
                "--full-refresh",
                help="As `flow run --full-refresh` would: the rows (versions) that go, the "
                "whole source read.",
            ),
        ] = False,
        discard_history: Annotated[
            bool, typer.Option("--discard-history", help="With --full-refresh, for scd2.")
        ] = False,
        target: Annotated[
            str | None,
            typer.Option("--target", metavar="SCHEMA.TABLE", help="This target only."),
        ] = None,
    ) -> None:
        _show(
            action,
            name,
            module,
            verbose=verbose,
            output=output,
            steer={
                "full_refresh": full_refresh,
                "discard_history": discard_history,
                "target": target,
            },
        )

    command.__name__ = command.__qualname__ = action
    command.__doc__ = doc
    return command


preview = _command(
    "preview",
    """Show what a run would do (keys and why, path, SQL); execute nothing.

    Exit 0 when every target would succeed.

    Example: flow preview customer_sync -m my_pipelines -v
    """,
)

dry_run = _command(
    "dry_run",
    """Execute every target in a transaction, show the rows, roll back.

    Exit 0 when every target would succeed.

    Example: flow dry-run customer_sync -m my_pipelines
    """,
)


def _show(
    action: str,
    name: str,
    module: str,
    *,
    verbose: bool,
    output: OutputFormat,
    steer: dict[str, Any] | None = None,
) -> None:
    load_module(module)
    from ematix_flow import pipeline
    from ematix_flow._preview import document, to_json

    entry = pipeline.get(name)
    from ematix_flow.config import connect

    for connection in entry.connections:
        connect(connection)  # not configured: a ConfigurationError, exit CONFIG_ERROR
    steer = steer or {}
    report = (
        pipeline.preview(name, **steer) if action == "preview" else pipeline.dry_run(name, **steer)
    )
    doc = document(report, schedule=entry.schedule)
    if output is OutputFormat.json:
        import sys

        sys.stdout.write(to_json(doc))
        sys.stdout.flush()
    else:
        from ematix_flow._preview.text import render

        render(doc, _output.console(), verbose_=True if verbose else None)
    if not doc["ok"]:
        code = ExitCode.CONFIG_ERROR if report.configuration_failed else ExitCode.RUN_FAILED
        raise _output.fail(_summary(doc), code)


def _summary(doc: dict[str, Any]) -> str:
    """The one ``error:`` line of a preview or dry run that would not succeed; the
    reasons are in the report, under each target."""
    by_outcome: dict[str, list[str]] = {}
    for t in doc["targets"]:
        by_outcome.setdefault(t["outcome"], []).append(t["target"])
    parts = []
    if by_outcome.get("failed"):
        parts.append(f"would fail: {', '.join(by_outcome['failed'])}")
    if by_outcome.get("unknown"):
        parts.append(
            f"cannot tell (a database could not be reached): {', '.join(by_outcome['unknown'])}"
        )
    if by_outcome.get("skipped"):
        parts.append(f"skipped (another run holds it): {', '.join(by_outcome['skipped'])}")
    why = " (the report says why)" if parts else ""
    if doc["error"]:
        parts.insert(0, f"the pipeline body failed: {doc['error']}")
    return f"pipeline {doc['pipeline']}: " + "; ".join(parts) + why
