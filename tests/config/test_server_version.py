"""PostgreSQL 14 is the oldest server ematix-flow runs on; an older one is refused when a
session opens, before any statement runs on it.

Why 14: the planner reads ``pg_class.reltuples = 0`` as "analyzed while empty" and -1 as
"never analyzed"; before 14 both read 0. The check reads the version the server sent
when the connection opened (``conn.info.server_version``), so it costs no round trip.

The refusal's logic is tested with a stand-in connection (no server needed); the rest
runs against a real PostgreSQL 13 when ``EMATIX_FLOW_TEST_PG13_DSN`` names one (its role
needs CREATEDB): ``scripts/test.sh`` starts one beside the default server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

from ematix_flow import pipeline
from ematix_flow._cli.main import app
from ematix_flow._core import connect
from ematix_flow._errors import ConnectionFailedError
from ematix_flow._exitcodes import ExitCode
from ematix_flow._session import pin
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text

if TYPE_CHECKING:
    from conftest import Databases

OLD_DSN_ENV = "EMATIX_FLOW_TEST_PG13_DSN"


class _Info:
    def __init__(self, server_version: int) -> None:
        self.server_version = server_version


class _Conn:
    """What :func:`pin` touches of a psycopg connection; records every statement."""

    autocommit = True

    def __init__(self, server_version: int) -> None:
        self.info = _Info(server_version)
        self.statements: list[str] = []

    def execute(self, query: str, params: Any = None) -> None:
        self.statements.append(query)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield


@pytest.mark.parametrize(("number", "shown"), [(130023, "13.23"), (90624, "9.6.24")])
def test_a_server_older_than_14_is_refused_before_any_statement(number: int, shown: str) -> None:
    conn = _Conn(number)
    with pytest.raises(ConnectionFailedError) as info:
        pin(conn)  # type: ignore[arg-type]
    message = str(info.value)
    assert f"PostgreSQL {shown}" in message
    assert "PostgreSQL 14" in message  # what is needed
    assert conn.statements == []  # not even the session settings were sent


@pytest.mark.parametrize("number", [140000, 150018, 180006, 190000])
def test_14_and_later_are_accepted(number: int) -> None:
    conn = _Conn(number)
    pin(conn)  # type: ignore[arg-type]
    assert len(conn.statements) == 1  # the session settings, in one round trip


# --------------------------------------------------------------------------- a real 13


class T(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "old_server_t"
    id = Column(BigInt(), nullable=False, primary_key=True)
    v = Column(Text())


@pytest.fixture
def old_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL 13 server, dropped afterwards."""
    base = os.environ.get(OLD_DSN_ENV)
    if not base:
        pytest.skip(f"{OLD_DSN_ENV} is not set (scripts/test.sh starts a PostgreSQL 13 for it)")
    name = f"old_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        assert conn.info.server_version // 10000 == 13, "this server is meant to be 13"
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(base)
    params["dbname"] = name
    yield make_conninfo(**params)
    from pg_helpers import drop_database

    drop_database(base, name)


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
            "AND nspname NOT IN ('information_schema', 'public')"
        ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.db
def test_opening_a_13_connection_is_refused_with_the_version_and_the_fix(old_url: str) -> None:
    password = conninfo_to_dict(old_url).get("password")
    with pytest.raises(ConnectionFailedError) as info:
        connect(url=old_url).open()
    message = str(info.value)
    assert "PostgreSQL 13." in message and "PostgreSQL 14" in message
    assert "explicit url" in message  # names the connection it refused
    if password:
        assert password not in message


@pytest.mark.db
def test_a_run_with_a_13_target_or_source_writes_nothing(old_url: str, dbs: Databases) -> None:
    old = connect(url=old_url)
    with psycopg.connect(old_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE src (id bigint PRIMARY KEY, v text)")
        conn.execute("INSERT INTO src VALUES (1, 'a')")
    before = _schemas(old_url)

    # a 13 target: refused when its session opens, nothing created there
    source = Source.postgres_query(connect(url=dbs.source_url), "SELECT 1::bigint AS id, 'a' AS v")
    with pytest.raises(ConnectionFailedError, match=r"PostgreSQL 13\."):
        pipeline.sync(target=T, source=source, target_connection=old, mode="merge")
    assert _schemas(old_url) == before

    # a 13 source: the run fails before its transaction on the 18 target writes
    # anything; that target only records the failed run, with the reason
    wh = connect(url=dbs.warehouse_url)
    with pytest.raises(ConnectionFailedError, match=r"PostgreSQL 13\."):
        pipeline.sync(
            target=T,
            source=Source.postgres_query(old, "SELECT id, v FROM src"),
            target_connection=wh,
            mode="merge",
        )
    assert "wh" not in _schemas(dbs.warehouse_url)  # no target schema or table
    with psycopg.connect(dbs.warehouse_url) as conn:
        history = conn.execute("SELECT status, error FROM ematix_flow.run_history").fetchall()
    assert [status for status, _ in history] == ["failed"]
    assert "PostgreSQL 13." in history[0][1]


@pytest.mark.db
def test_connections_check_reports_a_13_server_as_failed(
    old_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLD", old_url)
    result = CliRunner().invoke(app, ["connections", "check", "old"])
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert result.stdout.startswith("FAILED old")
    assert "PostgreSQL 13." in result.stdout and "PostgreSQL 14" in result.stdout
