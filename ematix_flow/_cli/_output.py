"""Output helpers shared by every ``flow`` command: consoles, ``--format``, errors.

Commands parse their arguments, call the public API and render through this module, so
colour, machine-readable output and error reporting behave the same everywhere:

- :func:`console` gives a rich Console: colour only on a terminal, never with
  ``--no-color`` or ``NO_COLOR``.
- :data:`FormatOption` is the ``--format text|json`` option; :func:`print_json` writes
  the machine form (stable keys, no colour, one document on stdout); :func:`print_listing`
  writes a command's list of items either way (a table for people).
- :func:`count` and :func:`utc` are the one form of a number and of a time in human
  output: ``1,000,000``, and ``2026-05-20 10:00:00`` in UTC under a header or next to
  a word that says UTC (``--format json`` keeps plain numbers and ISO 8601 times).
- :func:`report_error` / :func:`exit_code_for` are the single place where an
  :class:`EmatixFlowError` becomes a clean one-message stderr line and an exit code from
  :mod:`ematix_flow._exitcodes`; ``main.py`` routes every command's errors through them.
  :func:`fail` and :func:`print_error` write the same ``error: <message>`` line for a
  command that reports a failure itself (a run whose target failed).

The convention every command keeps: stdout carries the result (a report, a listing, a
JSON document), including the status of each item; every failure is an ``error:`` line
on stderr, and the exit code says the command failed.

rich is imported inside the functions, keeping ``flow --help`` fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import IO, TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from ematix_flow._errors import ConfigurationError, EmatixFlowError, PipelineNotFoundError
from ematix_flow._exitcodes import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "FormatOption",
    "OutputFormat",
    "color_disabled",
    "console",
    "count",
    "exit_code_for",
    "fail",
    "print_error",
    "print_json",
    "print_listing",
    "quiet_when_stdout_closes",
    "report_error",
    "set_no_color",
    "utc",
    "word_widths",
]

# Set from the global --no-color option by main.py's callback, once per invocation.
_no_color_flag = False
# Wide enough that tables are not wrapped when the output goes to a file or a pipe.
_PIPE_WIDTH = 200


class OutputFormat(StrEnum):
    """What a command prints: ``text`` for people, ``json`` for programs."""

    text = "text"
    json = "json"


FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", "-f", help="Output format: text for people, json for scripts."),
]


def set_no_color(flag: bool) -> None:
    """Record the global ``--no-color`` option (called by the root callback)."""
    global _no_color_flag
    _no_color_flag = flag


def color_disabled() -> bool:
    """True with ``--no-color`` or a non-empty ``NO_COLOR`` (https://no-color.org)."""
    return _no_color_flag or bool(os.environ.get("NO_COLOR"))


def console(*, stderr: bool = False, file: IO[str] | None = None) -> Console:
    """A rich Console on stdout (or stderr, or ``file``): colour only when it is a
    terminal and colour is not disabled; plain and wide when writing to a pipe or file
    (``COLUMNS``, when set, gives the width there too: tables fold long names in their
    column to fit, they never cut them)."""
    from rich.console import Console

    stream = file if file is not None else sys.stderr if stderr else sys.stdout
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    return Console(
        file=stream,
        no_color=color_disabled(),
        color_system="auto" if is_tty and not color_disabled() else None,
        highlight=False,
        width=None if is_tty or os.environ.get("COLUMNS", "").isdigit() else _PIPE_WIDTH,
        soft_wrap=not is_tty,
    )


def count(value: int | None) -> str:
    """A row count for people: ``1,000,000``; empty for ``None`` (nothing recorded)."""
    return "" if value is None else f"{value:,}"


def utc(value: datetime | None, *, seconds: bool = True) -> str:
    """An instant for people, in UTC: ``2026-05-20 10:00:00`` (``—`` for ``None``).
    The column header or the text around it says "UTC"."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def print_json(data: Any) -> None:
    """Write ``data`` as one indented JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


T = TypeVar("T")


def print_listing(
    items: Sequence[T],
    output: OutputFormat,
    *,
    to_json: Callable[[T], Any],
    columns: Sequence[str],
    row: Callable[[T], Sequence[Any]],
    empty: str,
    wrap: Sequence[str] = (),
) -> None:
    """A command's list of ``items``: with ``--format json`` one JSON array (each item
    through ``to_json``); otherwise a table of ``columns``, one ``row`` per item, or the
    ``empty`` message when there is no item.

    On a narrow terminal cells wrap, never are they cut: the other columns wrap between
    words only (a time, a count or a status stays whole), the ``wrap`` columns (long
    names, errors) fold anywhere to fit what is left."""
    if output is OutputFormat.json:
        print_json([to_json(item) for item in items])
        return
    out = console()
    if not items:
        out.print(empty, markup=False)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    cells = [list(row(item)) for item in items]
    widths = word_widths(columns, cells, wrap, out.width - 2 * (len(columns) - 1))
    for column in columns:
        table.add_column(column, overflow="fold", min_width=widths[column])
    for values in cells:
        table.add_row(*values)
    out.print(table)


class _QuietWhenClosed:
    """``sys.stdout`` as the ``flow`` process writes it: once the reader of the pipe is
    gone (``flow preview … | head``), the rest of the output is dropped instead of
    raising ``BrokenPipeError``, so the command finishes quietly with its own exit code
    (no traceback, no "Exception ignored" at exit, no 141)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        # What is still buffered, and everything after, goes to /dev/null: flushing the
        # real stream at exit cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def quiet_when_stdout_closes() -> None:
    """Wrap ``sys.stdout`` (once, by ``main()``) so a closed pipe ends the output quietly;
    see :class:`_QuietWhenClosed`."""
    if not isinstance(sys.stdout, _QuietWhenClosed):
        sys.stdout = _QuietWhenClosed(sys.stdout)  # type: ignore[assignment]


def word_widths(
    columns: Sequence[str], cells: Sequence[Sequence[Any]], wrap: Sequence[str], room: int
) -> dict[str, int | None]:
    """The ``min_width`` of each column of a table whose text is ``room`` wide: the
    longest word of its cells (a time, a count, a status is never broken), except for
    the ``wrap`` columns (long names, errors), which fold anywhere to fit what is left;
    ``None`` for all when there is no ``wrap`` column or the words alone do not fit
    (the table then folds evenly)."""
    if not wrap:
        return dict.fromkeys(columns)
    texts = [[str(getattr(cell, "plain", cell)) for cell in row] for row in cells]
    words = {
        column: max(
            len(word)
            for text in (column, *(row[i] for row in texts if i < len(row)))
            for word in text.split() or [""]
        )
        for i, column in enumerate(columns)
    }
    kept = [c for c in columns if c not in wrap]
    fits = sum(words[c] for c in kept) + 8 * len(wrap) <= room
    return {c: words[c] if fits and c in kept else None for c in columns}


def exit_code_for(exc: EmatixFlowError) -> ExitCode:
    """The exit code an error maps to: configuration problems (and a pipeline name the
    module does not register: a wrong command line in a CronJob) are CONFIG_ERROR, the
    rest RUN_FAILED."""
    if isinstance(exc, (ConfigurationError, PipelineNotFoundError)):
        return ExitCode.CONFIG_ERROR
    return ExitCode.RUN_FAILED


def report_error(exc: EmatixFlowError) -> ExitCode:
    """Print ``error: <message>`` on stderr (no traceback) and return its exit code."""
    print_error(str(exc))
    return exit_code_for(exc)


def fail(message: str, code: ExitCode = ExitCode.RUN_FAILED) -> typer.Exit:
    """Print ``error: <message>`` on stderr; return the ``typer.Exit`` to raise.

    Usage: ``raise fail("no connections configured", ExitCode.CONFIG_ERROR)``.
    """
    print_error(message)
    return typer.Exit(int(code))


def print_error(message: str) -> None:
    """Print ``error: <message>`` on stderr, for a failure the command reports and goes
    on from (one target of several), or reports before it exits (:func:`fail`)."""
    from rich.text import Text

    err = console(stderr=True)
    # Text, not markup: messages quote things like [connections.warehouse].
    err.print(Text("error: ", style="bold red") + Text(message))
