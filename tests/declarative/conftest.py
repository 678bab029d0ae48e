"""Fixtures for the declarative tests: named connections pointing at the test databases,
SQL helpers, and a registry that forgets the pipelines a test declared."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ematix_flow import pipeline


@pytest.fixture(autouse=True)
def _forget_registered_pipelines() -> Iterator[None]:
    """Pipelines declared inside a test leave the global registry when it ends."""
    before = set(pipeline.registry())
    yield
    for name in set(pipeline.registry()) - before:
        pipeline._unregister(name)


class Named:
    """The test databases as the named connections ``warehouse`` and ``oltp``."""

    def __init__(self, dbs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.dbs = dbs
        self._monkeypatch = monkeypatch
        self.urls = {"warehouse": dbs.warehouse_url, "oltp": dbs.source_url}
        self._extra: list[str] = []
        for name, url in self.urls.items():
            monkeypatch.setenv(f"EMATIX_FLOW_DSN_{name.upper()}", url)

    def add(self, name: str) -> str:
        """A further fresh database, configured as connection ``name`` (dropped by close)."""
        database = f"t_{uuid.uuid4().hex[:10]}_{name}"
        url = self.dbs.new_database(database)
        self._extra.append(database)
        self.urls[name] = url
        self._monkeypatch.setenv(f"EMATIX_FLOW_DSN_{name.upper()}", url)
        return url

    def close(self) -> None:
        for database in self._extra:
            self.dbs.drop_database(database)

    def sql(self, which: str, *statements: str) -> None:
        with psycopg.connect(self.urls[which], autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def rows(self, which: str, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.urls[which], autocommit=True) as conn:
            return conn.execute(query).fetchall()

    def exists(self, which: str, table: str) -> bool:
        return self.rows(which, f"SELECT to_regclass('{table}') IS NOT NULL")[0][0]

    def history(self, which: str = "warehouse") -> list[tuple[str, str, str]]:
        if not self.exists(which, "ematix_flow.run_history"):
            return []
        return self.rows(
            which,
            "SELECT pipeline, target, status FROM ematix_flow.run_history ORDER BY id",
        )


@pytest.fixture
def named(dbs: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Named]:
    env = Named(dbs, monkeypatch)
    yield env
    env.close()
