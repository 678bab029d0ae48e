"""Helpers for engine tests: connections to the per-test databases, table snapshots."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from ematix_flow._core import connect


class Env:
    def __init__(self, dbs: Any) -> None:
        self.dbs = dbs
        self.source = connect(dbs.source_url)
        self.warehouse = connect(dbs.warehouse_url)

    def src(self, *statements: str, params: Any = None) -> None:
        with psycopg.connect(self.dbs.source_url, autocommit=True) as c:
            for s in statements:
                c.execute(s, params)

    def wh(self, *statements: str, params: Any = None) -> None:
        with psycopg.connect(self.dbs.warehouse_url, autocommit=True) as c:
            for s in statements:
                c.execute(s, params)

    def rows(
        self, query: str, which: str = "warehouse", params: Any = None
    ) -> list[tuple[Any, ...]]:
        url = self.dbs.warehouse_url if which == "warehouse" else self.dbs.source_url
        with psycopg.connect(url, autocommit=True) as c:
            return c.execute(query, params).fetchall()

    def table(self, schema: str, name: str, order: str, cols: str = "*") -> list[tuple[Any, ...]]:
        q = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            sql.SQL(cols), sql.Identifier(schema, name), sql.SQL(order)
        )
        with psycopg.connect(self.dbs.warehouse_url, autocommit=True) as c:
            return c.execute(q).fetchall()


@pytest.fixture
def env(dbs: Any) -> Env:
    return Env(dbs)
