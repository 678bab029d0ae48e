"""What ``flow run``, ``flow run-due`` and ``flow backfill`` say while they run, and Ctrl-C.

stdout carries the result (the report, or ``--format json``); progress goes to stderr,
in the form ``--log-format`` (``EMATIX_FLOW_LOG_FORMAT``) asks for:

- ``text`` on a terminal: a live display, one line per target with its step, the rows
  a cross-DB copy has streamed, their rate and the elapsed time (rich progress). It is
  gone when the report is printed.
- ``text`` elsewhere (cron, a pod's log): one line when a target starts and one when it
  ends, with its rows and duration, each stamped with the UTC time.
- ``json``: the same events as JSON objects, one per line (``target_started``,
  ``target_finished``, ``window``, ``warning``, ``interrupted``).

Warnings raised during a run (an undeclared column left alone, …) are shown the same
way. Ctrl-C (SIGINT) rolls the running target back (the engine records it
``interrupted``); :meth:`RunDisplay.interruptible` then says which target rolled back and
which committed before, and exits with ``ExitCode.INTERRUPTED`` (130).

The engine knows nothing of this module: it reports through the ``progress=`` callback
of :mod:`ematix_flow.pipeline` (:class:`~ematix_flow.pipeline.Progress` events), which a
:class:`RunDisplay` is.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ematix_flow._cli._output import console
from ematix_flow._exitcodes import ExitCode

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    from ematix_flow._engine import TargetResult
    from ematix_flow.pipeline import Progress

__all__ = ["LogFormat", "LogFormatOption", "RunDisplay"]


class LogFormat(StrEnum):
    """How a run's progress is written on stderr."""

    text = "text"
    json = "json"


LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        envvar="EMATIX_FLOW_LOG_FORMAT",
        help="Progress on stderr: text (a live display on a terminal, else a line when each "
        "target starts and ends) or json (one JSON object per line, for log collectors).",
    ),
]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _rows(result: TargetResult) -> str:
    expired = f", expired {result.rows_expired:,}" if result.rows_expired else ""
    return (
        f"inserted {result.rows_inserted:,}, updated {result.rows_updated:,}, deleted "
        f"{result.rows_deleted:,}, unchanged {result.rows_unchanged:,}{expired}"
    )


class RunDisplay:
    """The ``progress=`` callback of a run; see the module docstring.

    ``console`` (tests) replaces the stderr console; ``live`` forces the live display on
    or off (by default: on when stderr is a terminal and the format is ``text``).
    """

    def __init__(
        self,
        log_format: LogFormat = LogFormat.text,
        *,
        console_: Console | None = None,
        live: bool | None = None,
    ) -> None:
        self.json = log_format is LogFormat.json
        self.console = console_ if console_ is not None else console(stderr=True)
        self.live = (not self.json and self.console.is_terminal) if live is None else live
        self._bars: RichProgress | None = None
        self._tasks: dict[tuple[str, str | None], TaskID] = {}
        #: Targets (with their backfill window) that committed in this process.
        self.committed: list[str] = []
        #: The target being written now (started, not finished), or the one Ctrl-C
        #: rolled back; with the backfill window it writes.
        self.current: str | None = None
        self._window: str | None = None

    # -- the callback ------------------------------------------------------------------

    def __call__(self, event: Progress) -> None:
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event)

    def _on_window(self, event: Progress, *, skipped: bool = False) -> None:
        self._window = None if skipped else event.text
        if self.json:
            self._emit(
                {
                    "event": "window",
                    "pipeline": event.pipeline,
                    "window": event.text,
                    "skipped": skipped,
                }
            )
        else:
            self._line(f"{event.pipeline}: {event}")

    def _on_window_done(self, event: Progress) -> None:
        self._on_window(event, skipped=True)

    def _on_started(self, event: Progress) -> None:
        self.current = f"{event.target} {self._window}" if self._window else event.target
        if self._bars is not None:
            key = (event.pipeline, event.target)
            self._tasks[key] = self._bars.add_task(
                f"{event.pipeline} {event.target}", total=None, step="starting", copying=False
            )
        elif self.json:
            self._emit(
                {
                    "event": "target_started",
                    "pipeline": event.pipeline,
                    "target": event.target,
                    "mode": event.mode,
                    "path": event.text or None,
                }
            )
        else:
            self._line(f"{event.pipeline} {event.target}: started ({event.mode}, {event.text})")

    def _on_step(self, event: Progress) -> None:
        task = self._tasks.get((event.pipeline, event.target))
        if self._bars is not None and task is not None:
            self._bars.update(task, step=event.text)

    def _on_rows(self, event: Progress) -> None:
        task = self._tasks.get((event.pipeline, event.target))
        if self._bars is not None and task is not None:
            self._bars.update(task, completed=event.rows or 0, copying=True)

    def _on_finished(self, event: Progress) -> None:
        result = event.result
        if result is None:
            return
        window = f" [{result.window[0]}, {result.window[1]})" if result.window else ""
        if result.status == "succeeded":
            self.committed.append(f"{result.target}{window}")
        if result.status != "interrupted":
            self.current = None
        task = self._tasks.pop((event.pipeline, event.target), None)
        if self._bars is not None:
            if task is not None:
                self._bars.update(task, step=result.status)
                self._bars.stop_task(task)
            return
        if self.json:
            self._emit(
                {
                    "event": "target_finished",
                    "pipeline": event.pipeline,
                    "target": result.target,
                    "mode": result.mode,
                    "status": result.status,
                    "path": result.path,
                    "window": list(result.window) if result.window else None,
                    "duration_s": round(result.duration_s, 3),
                    "rows_inserted": result.rows_inserted,
                    "rows_updated": result.rows_updated,
                    "rows_deleted": result.rows_deleted,
                    "rows_unchanged": result.rows_unchanged,
                    "rows_expired": result.rows_expired,
                    "source_rows": result.source_rows,
                    "error": result.error,
                }
            )
            return
        head = f"{event.pipeline} {result.target}{window}: {result.status}"
        if result.status == "succeeded":
            self._line(f"{head} in {result.duration_s:.2f}s: {_rows(result)}")
        elif result.status == "interrupted":
            self._line(f"{head} after {result.duration_s:.2f}s: rolled back, nothing committed")
        elif result.status in ("skipped", "not_run"):
            self._line(f"{head}: {_one_line(result.error)}")
        else:
            self._line(f"{head} in {result.duration_s:.2f}s: {_one_line(result.error)}")

    # -- output ------------------------------------------------------------------------

    def _emit(self, record: dict[str, Any]) -> None:
        self.console.file.write(json.dumps({"time": _now(), **record}, default=str) + "\n")
        self.console.file.flush()

    def _line(self, text: str) -> None:
        from rich.text import Text

        stamp = "" if self._bars is not None else f"{_now()} "
        self.console.print(Text(stamp + text), soft_wrap=True)

    def _warning(self, message: Any, category: type[Warning], *_: Any, **__: Any) -> None:
        if self.json:
            self._emit({"event": "warning", "message": str(message)})
        else:
            self._line(f"warning: {message}")

    # -- while a run runs --------------------------------------------------------------

    @contextmanager
    def showing(self) -> Iterator[RunDisplay]:
        """While a run runs: the live display (on a terminal) and its warnings shown here."""
        with warnings.catch_warnings():
            warnings.showwarning = self._warning
            if not self.live:
                yield self
                return
            from rich.progress import Progress as RichProgress

            self._bars = RichProgress(*_columns(), console=self.console, transient=True)
            try:
                with self._bars:
                    yield self
            finally:
                self._bars = None
                self._tasks.clear()

    def interrupted_message(self) -> str:
        """What Ctrl-C stopped: the target rolled back, and what committed before it."""
        if self.current is not None:
            text = f"interrupted: target {self.current} rolled back, nothing committed"
        else:
            text = "interrupted: no target was being written"
        if self.committed:
            text += f"; committed before the interrupt: {', '.join(self.committed)}"
        return text

    @contextmanager
    def interruptible(self) -> Iterator[RunDisplay]:
        """Ctrl-C inside: the one-line message on stderr and exit code 130."""
        try:
            yield self
        except KeyboardInterrupt:
            message = self.interrupted_message()
            if self.json:
                self._emit({"event": "interrupted", "message": message})
            else:
                from rich.text import Text

                self.console.print(Text(message), soft_wrap=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


def _columns() -> tuple[Any, ...]:
    """Spinner, target, step, rows copied and their rate, elapsed time."""
    from rich.progress import ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class RowsColumn(ProgressColumn):
        """Rows copied so far and their rate, once a cross-DB copy has reported."""

        def render(self, task: Any) -> Text:
            if not task.fields.get("copying"):
                return Text("")
            speed = task.finished_speed or task.speed
            rate = f"  {speed:,.0f} rows/s" if speed else ""
            return Text(f"{int(task.completed):,} rows{rate}")

    return (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.fields[step]}", style="dim"),
        RowsColumn(),
        TimeElapsedColumn(),
    )
