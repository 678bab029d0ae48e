"""An error in the source SQL: preview marks the target ``✗`` (it would fail, the
databases were reached), and the error points into the user's SQL, not into the
statement that wraps it."""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from typing import Any

import pytest
from preview_helpers import flow_process

from ematix_flow import pipeline
from ematix_flow._exitcodes import ExitCode

pytestmark = pytest.mark.db

MODULE = """
from ematix_flow import pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text


def table(name):
    return type(name, (ManagedTable,), {
        "__schema__": "mart",
        "__tablename__": name.lower(),
        "id": Column(BigInt(), nullable=False, primary_key=True),
        "name": Column(Text()),
    })


SAME_DB_WHERE = "SELECT id, name\\nFROM people\\nWHERE"
CROSS_DB_TYPO = "SELECT id,\\n       nmae AS name\\nFROM people"
TRAILING_COMMENT = "SELECT id, name FROM people -- every row, no ')' after this"


@pipeline.register(name="pv_src_errors", continue_on_failure=True)
def pv_src_errors():
    for target, connection, query in (
        (table("EndsInWhere"), "warehouse", SAME_DB_WHERE),
        (table("Typo"), "oltp", CROSS_DB_TYPO),
        (table("Commented"), "warehouse", TRAILING_COMMENT),
    ):
        pipeline.sync(
            target=target,
            source=Source.postgres_query(connection, query),
            target_connection="warehouse",
            mode="merge",
        )
"""


def pointed_at(text: str, quoted: str) -> str:
    """In ``text``, the rest of the line that quotes ``quoted`` from the column the
    caret on the next line marks."""
    lines = text.splitlines()
    n = next(i for i, line in enumerate(lines) if quoted in line)
    return lines[n][lines[n + 1].index("^") :]


def test_source_sql_errors_are_failures_quoted_in_the_users_sql(project: Any) -> None:
    for which in ("warehouse", "oltp"):
        project.sql(which, "CREATE TABLE people (id bigint, name text)")
    module = project.module(f"pv_src_{uuid.uuid4().hex[:8]}", MODULE)

    result = flow_process("preview", "pv_src_errors", "--module", module)
    out = result.stdout
    assert result.returncode == ExitCode.RUN_FAILED, result.stderr
    marks = {line.split()[1]: line.split()[0] for line in out.splitlines() if "mode=" in line}
    assert marks == {"mart.endsinwhere": "✗", "mart.typo": "✗", "mart.commented": "✓"}
    # the end of the user's SQL, not our wrapper's ")"
    assert "the source query failed: syntax error at end of input" in out
    assert 'at or near ")"' not in out
    assert pointed_at(out, "LINE 3: WHERE") == ""
    assert 'column "nmae" does not exist' in out
    assert pointed_at(out, "LINE 2:        nmae AS name") == "nmae AS name"

    # a run reads the source the same way: the same messages
    sys.path.insert(0, os.getcwd())
    importlib.import_module(module)
    report = pipeline.run("pv_src_errors")
    errors = {r.target: r.error or "" for r in report.results}
    assert "the source query failed: syntax error at end of input" in errors["mart.endsinwhere"]
    assert pointed_at(errors["mart.endsinwhere"], "LINE 3: WHERE") == ""
    assert pointed_at(errors["mart.typo"], "LINE 2:") == "nmae AS name"
    assert [r.status for r in report.results] == ["failed", "failed", "succeeded"]
