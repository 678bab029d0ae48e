"""Shared fixtures: one real PostgreSQL per test session, fresh databases per test.

By default the embedded server from ``pgserver`` is started once per session; with
``EMATIX_FLOW_TEST_DSN`` set, that server is used instead (its role needs CREATEDB).
Each test that asks for ``dbs`` gets two brand-new databases, ``source`` and
``warehouse``, on that server: a cross-DB pair, isolated from every other test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ematix_flow import pipeline

ENV_PREFIXES = ("EMATIX_FLOW_DSN",)


@dataclass(frozen=True)
class Databases:
    """A pair of fresh databases on the test server."""

    server_url: str
    source_url: str
    warehouse_url: str

    def connect(self, which: str = "warehouse", **kwargs: object) -> psycopg.Connection:
        url = {"source": self.source_url, "warehouse": self.warehouse_url}[which]
        return psycopg.connect(url, autocommit=True, **kwargs)

    def new_database(self, name: str) -> str:
        return _create_database(self.server_url, name)


def _database_url(server_url: str, database: str) -> str:
    params = conninfo_to_dict(server_url)
    params["dbname"] = database
    return make_conninfo(**params)


def _create_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _database_url(server_url, name)


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of the test PostgreSQL server (its maintenance database)."""
    external = os.environ.get("EMATIX_FLOW_TEST_DSN")
    if external:
        yield external
        return
    from ematix_flow._embedded import start_embedded

    server = start_embedded()
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def dbs(pg_server_url: str) -> Iterator[Databases]:
    """Two fresh databases (source, warehouse), dropped after the test."""
    tag = uuid.uuid4().hex[:10]
    names = [f"t_{tag}_src", f"t_{tag}_wh"]
    urls = [_create_database(pg_server_url, n) for n in names]
    yield Databases(pg_server_url, *urls)
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        for n in names:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(n))
            )


@pytest.fixture(autouse=True)
def _isolated_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test sees the developer's connections: fresh HOME, cwd and DSN variables."""
    home = tmp_path_factory.mktemp("home")
    work = tmp_path_factory.mktemp("cwd")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    for key in list(os.environ):
        if key.startswith(ENV_PREFIXES):
            monkeypatch.delenv(key)
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture
def names() -> Iterator[list[str]]:
    """A list a test appends the names of the pipelines it registers to; they are
    unregistered when the test ends."""
    made: list[str] = []
    yield made
    for n in made:
        pipeline._unregister(n)
