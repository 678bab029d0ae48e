"""Errors point at the real cause, on both paths.

What is proved:

- A source query that fails by itself (``1/(id-id)``: division by zero) is reported as
  a failure of the source naming that cause, never as "a source value does not fit the
  target column's type" — through the cross-DB and the same-DB path alike.
- A ``char(5)`` source column whose value (``'abcde'``) is too long for a ``String(3)``
  target column fails naming that column and the cause (value too long), not a type the
  source never had (``character(1)``), through both paths.

Each test runs both paths and reports every path that gets it wrong.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from ematix_flow import _core, pipeline
from ematix_flow._errors import EmatixFlowError
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, String

pytestmark = pytest.mark.db

PATHS = ("cross_db", "same_db")


class Ratio(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "ratio"

    id = Column(BigInt(), nullable=False, primary_key=True)
    v = Column(BigInt())


class Code(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "code"

    id = Column(BigInt(), nullable=False, primary_key=True)
    sku = Column(String(3))


@pytest.fixture
def sources(dbs: Any) -> Any:
    """``app.n`` (ids) and ``app.c`` (a ``char(5)`` column) in both databases."""
    for url in (dbs.source_url, dbs.warehouse_url):
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE SCHEMA app")
            c.execute("CREATE TABLE app.n (id bigint PRIMARY KEY)")
            c.execute("INSERT INTO app.n VALUES (1), (2)")
            c.execute("CREATE TABLE app.c (id bigint PRIMARY KEY, sku char(5))")
            c.execute("INSERT INTO app.c VALUES (1, 'ab'), (2, 'abcde')")
    return dbs


def _error(dbs: Any, path: str, target: type[ManagedTable], query: str) -> str:
    warehouse = _core.connect(dbs.warehouse_url)
    source = warehouse if path == "same_db" else _core.connect(dbs.source_url)
    with pytest.raises(EmatixFlowError) as info:
        pipeline.sync(
            target=target,
            source=Source.postgres_query(source, query),
            target_connection=warehouse,
            mode="merge",
            force_path=path,
        )
    return str(info.value)


def test_a_failing_source_query_is_reported_as_the_source_failing(sources: Any) -> None:
    problems = []
    for path in PATHS:
        message = _error(sources, path, Ratio, "SELECT id, 1/(id-id) AS v FROM app.n")
        if "division by zero" not in message:
            problems.append(f"{path}: the cause is not named: {message}")
        if re.search(r"does not fit|column's type", message, re.I):
            problems.append(f"{path}: blames the target column's type: {message}")
        if not re.search(r"\bsource\b.*\bfail", message, re.I | re.S):
            problems.append(f"{path}: does not say the source failed: {message}")
    assert not problems, "\n".join(problems)


def test_a_value_too_long_for_the_target_names_the_column(sources: Any) -> None:
    problems = []
    for path in PATHS:
        message = _error(sources, path, Code, "SELECT id, sku FROM app.c")
        if not re.search(r"column\W+sku\b", message, re.I):
            problems.append(f"{path}: the column is not named: {message}")
        if "too long" not in message:
            problems.append(f"{path}: the cause is not named: {message}")
        if "character(1)" in message:
            problems.append(f"{path}: names a type the source does not have: {message}")
    assert not problems, "\n".join(problems)
