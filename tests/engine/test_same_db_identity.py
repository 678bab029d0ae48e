"""The same-DB path is taken only when it reads exactly what the source connection would.

The same-DB path runs the source SQL inside the target's statements, with the target's
role and session settings. That is only the same query when host, port, database *and*
role are the same and the source connection sets no session options of its own.

What is proved, on one database holding ``public.u`` and ``app.u`` (same columns,
different rows):

- a source connection logging in as another role (whose ``search_path`` is ``app``, set
  by ``ALTER ROLE … SET``) reads ``app.u`` for ``SELECT id, name FROM u`` — what that role
  sees — and the plan takes the cross-DB path with a reason saying the role differs;
- a source DSN with its own ``options`` (``-c search_path=app``) likewise reads
  ``app.u`` through the cross-DB path;
- the same host, port, database and user still take the same-DB path (the contrast).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ematix_flow import _core, pipeline
from ematix_flow._engine import TargetOptions, plan
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text

pytestmark = pytest.mark.db

QUERY = "SELECT id, name FROM u"
APP_ROWS = [(1, "app one"), (2, "app two")]
PUBLIC_ROWS = [(1, "public one"), (3, "public three")]


class People(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "people"

    id = Column(BigInt(), nullable=False, primary_key=True)
    name = Column(Text())


def _with(url: str, **params: str) -> str:
    given = conninfo_to_dict(url)
    given.update(params)
    return make_conninfo(**given)


@pytest.fixture
def tables(dbs: Any) -> None:
    """``app.u`` and ``public.u`` on the warehouse database: same columns, other rows."""
    with dbs.connect("warehouse") as c:
        c.execute("CREATE SCHEMA app")
        c.execute("CREATE TABLE app.u (id bigint PRIMARY KEY, name text)")
        c.execute("CREATE TABLE public.u (id bigint PRIMARY KEY, name text)")
        for table, rows in (("app.u", APP_ROWS), ("public.u", PUBLIC_ROWS)):
            for row in rows:
                c.execute(f"INSERT INTO {table} VALUES (%s, %s)", row)


@pytest.fixture
def reader(dbs: Any, tables: None) -> Iterator[str]:
    """A LOGIN role with ``search_path = app`` that may read ``app.u`` only; its URL on
    the warehouse database. Dropped at the end."""
    role, password = f"reader_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    ident = sql.Identifier(role)
    with dbs.connect("warehouse") as c:
        # a password of its own: the test server may check passwords (scram-sha-256)
        c.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(password)))
        # membership, so that a role that is not a superuser may end its sessions and
        # drop what it owns afterwards (PostgreSQL 16+ no longer implies it)
        c.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(ident))
        c.execute(sql.SQL("ALTER ROLE {} SET search_path = app").format(ident))
        c.execute(sql.SQL("GRANT USAGE ON SCHEMA app TO {}").format(ident))
        c.execute(sql.SQL("GRANT SELECT ON app.u TO {}").format(ident))
    try:
        yield _with(dbs.warehouse_url, user=role, password=password)
    finally:
        with dbs.connect("warehouse") as c:
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            c.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            c.execute(sql.SQL("DROP ROLE {}").format(ident))


def _path_decision(source_url: str, target_url: str) -> tuple[str, str]:
    options = TargetOptions(table=People.__table_spec__, mode="merge")
    source = Source.postgres_query(_core.connect(source_url), QUERY)
    p = plan(options, source, _core.connect(target_url), pipeline="identity")
    [decision] = [d for d in p.decisions if d.topic == "path"]
    assert decision.value == p.path
    return p.path, decision.reason


def _sync(source_url: str, target_url: str) -> dict[str, Any]:
    return pipeline.sync(
        target=People,
        source=Source.postgres_query(_core.connect(source_url), QUERY),
        target_connection=_core.connect(target_url),
        mode="merge",
    )


def _people(dbs: Any) -> list[tuple[Any, ...]]:
    with dbs.connect("warehouse") as c:
        return c.execute("SELECT id, name FROM wh.people ORDER BY id").fetchall()


def _words(reason: str, *urls: str) -> str:
    """The reason without the connection descriptions it quotes (they hold role names)."""
    for url in urls:
        conn = _core.connect(url)
        for text in (conn.describe(), conn.target, conn.redacted):
            reason = reason.replace(text, " ")
    return reason


def test_another_role_on_the_same_database_reads_what_that_role_sees(dbs: Any, reader: str) -> None:
    with psycopg.connect(reader, autocommit=True) as c:  # what the source connection reads
        assert c.execute(QUERY + " ORDER BY id").fetchall() == APP_ROWS
    same, why = _path_decision(dbs.warehouse_url, dbs.warehouse_url)
    assert same == "same_db", f"the same role on the same database: {why}"

    result = _sync(reader, dbs.warehouse_url)
    assert _people(dbs) == APP_ROWS, (
        f"the source was read with the target's role (path {result['path']}): "
        "public.u instead of the source role's app.u"
    )
    assert result["path"] == "cross_db", result

    path, reason = _path_decision(reader, dbs.warehouse_url)
    assert path == "cross_db", f"a source logged in as another role took the {path} path: {reason}"
    assert re.search(r"\b(role|user)s?\b", _words(reason, reader, dbs.warehouse_url), re.I), (
        f"the path's reason does not say the role differs: {reason}"
    )


def test_source_session_options_take_the_cross_db_path(dbs: Any, tables: None) -> None:
    source_url = _with(dbs.warehouse_url, options="-c search_path=app")
    path, reason = _path_decision(source_url, dbs.warehouse_url)
    assert path == "cross_db", (
        f"a source with its own session options took the {path} path: {reason}"
    )
    result = _sync(source_url, dbs.warehouse_url)
    assert _people(dbs) == APP_ROWS, "the source's search_path was ignored"
    assert result["path"] == "cross_db", result
