"""The ``flow`` CLI: the typer app, its global options, and ``main()`` (the console
script ``flow = ematix_flow._cli.main:main``).

How commands are added — one module per command group or top-level command in
``ematix_flow/_cli/``, attached below, nothing else in this file:

- A **group** (``flow connections list|check|set``): the module defines
  ``app = typer.Typer(name=..., help=..., no_args_is_help=True)`` and its commands
  with ``@app.command("list")``; attach it with one line::

      app.add_typer(connections.app, name="connections")

- A **top-level command** (``flow run NAME``): the module defines a plain function
  with typer ``Annotated`` parameters; attach it with one line::

      app.command("run")(run.run)

Rules every command follows (they keep the CLI fast and scriptable):

- Parse, call the public API, render. No business logic in the CLI.
- Import heavy libraries (psycopg, rich, pydantic, the engine) *inside* the command
  function, never at module level: ``flow --help`` must start in well under 0.5 s.
- Print through :mod:`._output` (``console()``, ``--format`` via ``FormatOption``,
  ``print_json``); never ``print`` a DSN, only ``Connection.redacted``/``describe()``.
- Raise :class:`ematix_flow.EmatixFlowError` subclasses for failures: the root group
  below turns them into ``error: <message>`` on stderr and the exit code of
  :mod:`ematix_flow._exitcodes` (ConfigurationError → CONFIG_ERROR, else RUN_FAILED),
  never a traceback. To exit with a code of your own, ``raise _output.fail(msg, code)``
  or ``raise typer.Exit(ExitCode.X)``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

import ematix_flow._cli.k8s as k8s
from ematix_flow._cli import _output, connections, demo, devdb, preview, run, state
from ematix_flow._errors import EmatixFlowError
from ematix_flow._exitcodes import ExitCode

__all__ = ["app", "main"]


class _FlowGroup(TyperGroup):
    """The root group: every subcommand runs inside its ``invoke``, so this is the one
    place an :class:`EmatixFlowError` becomes a clean message and an exit code.

    Built once per invocation with every command below it, it also gives each boolean
    flag of the tree (``--help`` included) an empty metavar: a flag takes no value, so
    its help shows none (typer would print ``<bool>``)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        root = self.context_class(self, info_name="flow", **self.context_settings)
        _flags_take_no_value(self, root)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EmatixFlowError as exc:
            code = _output.report_error(exc)
            raise typer.Exit(int(code)) from None
        except KeyboardInterrupt:
            # Ctrl-C outside a run (a run says what it rolled back itself)
            _output.console(stderr=True).print("interrupted", markup=False)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


def _flags_take_no_value(command: Any, ctx: Any) -> None:
    for param in [*command.params, command.get_help_option(ctx)]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for name, sub in getattr(command, "commands", {}).items():
        _flags_take_no_value(sub, command.context_class(sub, info_name=name, parent=ctx))


app = typer.Typer(
    name="flow",
    cls=_FlowGroup,
    help="ematix-flow: declarative PostgreSQL → PostgreSQL sync pipelines.\n\nExample: flow demo",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold DSNs
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from ematix_flow import __version__

        typer.echo(f"ematix-flow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    no_color: Annotated[
        bool,
        typer.Option("--no-color", help="No colour in the output (NO_COLOR is honoured too)."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """ematix-flow: declarative PostgreSQL → PostgreSQL sync pipelines.

    Example: flow demo
    """
    _output.set_no_color(no_color)


# --- command groups and commands, one line each (see the module docstring) -----------
app.add_typer(connections.app, name="connections")
app.add_typer(devdb.app, name="dev-db")
app.command("export-k8s")(k8s.export_k8s)
app.command("demo")(demo.demo)
app.command("list")(run.list_)
app.command("run")(run.run)
app.command("run-due")(run.run_due)
app.command("history")(run.history)
app.add_typer(state.app, name="state")
app.command("backfill")(state.backfill)
app.command("preview")(preview.preview)
app.command("dry-run")(preview.dry_run)


def main() -> None:
    """Console-script entry point."""
    _output.quiet_when_stdout_closes()
    app(prog_name="flow")


if __name__ == "__main__":
    main()
