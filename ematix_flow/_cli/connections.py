"""``flow connections list | check [NAME] | set NAME=DSN | remove NAME`` — the
connection registry (spec §3.1) from the command line.

Each command calls :mod:`ematix_flow.config` and renders the result; no DSN is ever
printed except in its redacted form, including the driver's failure messages.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ematix_flow._cli._output import (
    FormatOption,
    OutputFormat,
    console,
    fail,
    print_json,
    print_listing,
)
from ematix_flow._exitcodes import ExitCode

__all__ = ["app"]

app = typer.Typer(
    name="connections",
    help="List, check, set and remove named database connections."
    "\n\nExample: flow connections check",
    no_args_is_help=True,
)

_HOW_TO_CONFIGURE = (
    "Configure one with `flow connections set NAME=postgresql://user:password@host/db`, "
    "an EMATIX_FLOW_DSN_<NAME> environment variable, or a [connections.<name>] table "
    "in ./.ematix-flow.toml"
)


@app.command("list")
def list_(output: FormatOption = OutputFormat.text) -> None:
    """Show each configured connection: origin, host, port, database, user (no password).

    Example: flow connections list --format json
    """
    from ematix_flow.config import ConfiguredConnection, configured_connections

    def row(e: ConfiguredConnection) -> tuple[str, ...]:
        c = e.connection
        if c is None:
            return e.name, e.origin, f"[red]error:[/red] {_escape(e.error or '')}"
        return (
            *(_escape(v) for v in (e.name, e.origin, c.host or "(default)")),
            str(c.port) if c.port is not None else "(default)",
            _escape(c.dbname or "(default)"),
            _escape(c.user or "(default)"),
        )

    print_listing(
        configured_connections(),
        output,
        to_json=_entry_json,
        columns=("NAME", "CONFIGURED IN", "HOST", "PORT", "DATABASE", "USER"),
        row=row,
        empty=f"No connections configured. {_HOW_TO_CONFIGURE}.",
    )


@app.command("check")
def check(
    name: Annotated[
        str | None,
        typer.Argument(help="Check only this connection (default: every configured one)."),
    ] = None,
    timeout: Annotated[
        int, typer.Option("--timeout", min=1, help="Seconds to wait for each connection.")
    ] = 5,
    output: FormatOption = OutputFormat.text,
) -> None:
    """Connect to each connection (or NAME): OK or FAILED with the reason; exit 1 if any failed.

    Example: flow connections check warehouse --timeout 10
    """
    from ematix_flow.config import ConfiguredConnection, configured_connections, connect

    if name is not None:
        conn = connect(name)  # an unknown name is a ConfigurationError → CONFIG_ERROR
        entries = [ConfiguredConnection(conn.name or name, conn.origin, conn, None)]
    else:
        entries = configured_connections()
        if not entries:
            raise fail(f"no connections configured. {_HOW_TO_CONFIGURE}", ExitCode.CONFIG_ERROR)

    # Connections are checked side by side: unreachable hosts each wait for the timeout.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, len(entries))) as pool:
        results = list(pool.map(lambda e: _check_one(e, timeout), entries))
    if output is OutputFormat.json:
        print_json(results)
    else:
        from rich.text import Text

        out = console()
        for r in results:
            line = (
                Text("OK     ", style="bold green")
                if r["ok"]
                else Text("FAILED ", style="bold red")
            )
            line.append(f"{r['name']} → {r['target']}  ({r['origin']})")
            if r["ok"]:
                line.append(f"  PostgreSQL {r['server_version']}", style="dim")
            else:
                line.append("\n       " + r["reason"])
            out.print(line)
    failed = [r["name"] for r in results if not r["ok"]]
    if failed:
        raise fail(
            f"{len(failed)} of {len(results)} connections failed the check: "
            f"{', '.join(failed)} (the report says why)",
            ExitCode.RUN_FAILED,
        )


@app.command("set")
def set_(
    assignment: Annotated[
        str,
        typer.Argument(
            metavar="NAME=DSN",
            help="e.g. warehouse=postgresql://user:password@host:5432/db",
            show_default=False,
        ),
    ],
) -> None:
    """Save NAME=DSN in ~/.ematix-flow/connections.toml (mode 0600; other entries are kept).

    Example: flow connections set warehouse=postgresql://etl:secret@db/wh
    """
    from ematix_flow.config import connect, overriding_sources, save_user_connection

    name, sep, dsn = assignment.partition("=")
    name, dsn = name.strip(), dsn.strip()
    if not sep or not name or not dsn:
        raise fail(
            "expected NAME=DSN, e.g. `flow connections set "
            "warehouse=postgresql://user:password@host:5432/db`",
            ExitCode.USAGE,
        )
    path = save_user_connection(name, dsn)
    out = console()
    from ematix_flow._core import redact_dsn

    out.print(f"Saved {name!r} ({redact_dsn(dsn)}) to {path}", markup=False)
    shadows = overriding_sources(name)
    if shadows:
        winner = connect(name)
        out.print(
            f"Note: {', '.join(shadows)} also configures {name!r} and takes precedence; "
            f"connect({name!r}) resolves to {winner.redacted} from {winner.origin}.",
            markup=False,
        )


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The connection to remove.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove NAME from ~/.ematix-flow/connections.toml (where `flow connections set` saves).

    Asks first on a terminal (--yes to skip; required without one). A name
    configured elsewhere (an environment variable, ./.ematix-flow.toml) is
    left alone: the command says where it is and how to remove it.

    Example: flow connections remove warehouse --yes
    """
    import sys

    from ematix_flow._core import redact_dsn
    from ematix_flow.config import (
        connect,
        overriding_sources,
        remove_user_connection,
        saved_user_connection,
        user_config_path,
    )

    path = user_config_path()
    saved = saved_user_connection(name)
    shadows = overriding_sources(name)
    if saved is None:
        if shadows:
            raise fail(
                f"connection {name!r} is not saved in {path}; it is configured by "
                f"{', '.join(shadows)}; to remove it, {_how_to_remove(name, shadows)}",
                ExitCode.CONFIG_ERROR,
            )
        raise fail(f"no connection named {name!r} is saved in {path}", ExitCode.CONFIG_ERROR)
    what = f"connection {name!r} ({redact_dsn(saved)}) from {path}"
    if not yes:
        if not sys.stdin.isatty():
            raise fail(f"this would remove {what}; pass --yes to do it", ExitCode.USAGE)
        if not typer.confirm(f"Remove {what}?", default=False):
            console().print("Nothing removed.", markup=False)
            return
    remove_user_connection(name)
    out = console()
    out.print(f"Removed {what}", markup=False)
    if shadows:
        still = connect(name)
        out.print(
            f"Note: {', '.join(shadows)} still configures {name!r}: connect({name!r}) "
            f"resolves to {still.redacted} from {still.origin}. To remove it there too, "
            f"{_how_to_remove(name, shadows)}.",
            markup=False,
        )


def _how_to_remove(name: str, sources: list[str]) -> str:
    steps = [
        f"unset {source.removeprefix('env ')}"
        if source.startswith("env ")
        else f"delete [connections.{name}] from {source}"
        for source in sources
    ]
    return " and ".join(steps)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _entry_json(entry: Any) -> dict[str, Any]:
    c = entry.connection
    return {
        "name": entry.name,
        "origin": entry.origin,
        "host": c.host if c else None,
        "port": c.port if c else None,
        "dbname": c.dbname if c else None,
        "user": c.user if c else None,
        "dsn": c.redacted if c else None,
        "error": entry.error,
    }


def _check_one(entry: Any, timeout: int) -> dict[str, Any]:
    """Try one connection; every failure becomes a FAILED row, never an exception."""
    import psycopg

    from ematix_flow._core import redact_dsn
    from ematix_flow._errors import ConnectionFailedError

    c = entry.connection
    result: dict[str, Any] = {
        "name": entry.name,
        "origin": entry.origin,
        "target": c.target if c else "?",
        "ok": False,
        "server_version": None,
        "reason": entry.error,
    }
    if c is None:
        return result
    try:
        with c.open(connect_timeout=timeout, autocommit=True) as pg:
            pg.execute("SELECT 1")
            version = pg.info.server_version
    except ConnectionFailedError as exc:
        result["reason"] = str(exc)
    except psycopg.Error as exc:
        result["reason"] = redact_dsn(" ".join(str(exc).split()), c._password)
    else:
        result["ok"] = True
        result["server_version"] = f"{version // 10000}.{version % 10000}"
    return result
