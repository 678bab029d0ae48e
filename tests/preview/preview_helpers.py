"""Helpers of the preview / dry-run tests: the test databases as named connections, a
pipelines module written into the working directory, the ``flow`` CLI in-process and as
a real process, and a row-for-row snapshot of whole databases. (A module of its own,
not conftest: test folders each have a conftest, and ``import conftest`` is ambiguous.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from typer.testing import CliRunner

from ematix_flow._cli.main import app
from tests.declarative.conftest import Named

FLOW = [sys.executable, "-m", "ematix_flow._cli.main"]


class Project(Named):
    """The test databases as connections ``warehouse`` and ``oltp`` with the declarative
    tests' SQL helpers (:class:`Named`), plus a pipelines module in the working
    directory and snapshots."""

    def module(self, name: str, text: str) -> str:
        Path(f"{name}.py").write_text(text, encoding="utf-8")
        return name

    def snapshot(self) -> dict[str, Any]:
        """Every user table of both databases, row for row (as text, sorted), plus the
        catalog: schemas, columns, indexes and constraints."""
        return {which: database_snapshot(url) for which, url in self.urls.items()}


def database_snapshot(url: str) -> dict[str, Any]:
    user = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    out: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        out["schemas"] = conn.execute(
            f"SELECT nspname FROM pg_namespace n WHERE {user} AND nspname NOT LIKE 'pg_temp%%' "
            "AND nspname NOT LIKE 'pg_toast_temp%%' ORDER BY 1"
        ).fetchall()
        out["columns"] = conn.execute(
            "SELECT table_schema, table_name, column_name, data_type, is_nullable "
            "FROM information_schema.columns WHERE table_schema NOT IN "
            "('pg_catalog', 'information_schema') ORDER BY 1, 2, ordinal_position"
        ).fetchall()
        out["indexes"] = conn.execute(
            "SELECT schemaname, indexname, indexdef FROM pg_indexes WHERE schemaname NOT IN "
            "('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        out["constraints"] = conn.execute(
            "SELECT n.nspname, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            f"JOIN pg_namespace n ON n.oid = c.connamespace WHERE {user} ORDER BY 1, 2"
        ).fetchall()
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
            f"ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND {user} "
            "AND n.nspname NOT LIKE 'pg_temp%%' ORDER BY 1, 2"
        ).fetchall()
        for schema, table in tables:
            rows = conn.execute(
                sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier(schema, table))
            ).fetchall()
            out[f"{schema}.{table}"] = sorted(r[0] for r in rows)
    return out


def flow(*args: str) -> Any:
    """``flow ARGS`` in-process (stdout is not a terminal)."""
    return CliRunner().invoke(app, list(args))


def flow_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``flow ARGS`` as a real process, stdout and stderr piped."""
    return subprocess.run(
        [*FLOW, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )
