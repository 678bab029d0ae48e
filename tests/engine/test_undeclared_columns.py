"""A target column the table's class does not declare (declared once, then removed).

Every mode, through both paths: the engine's statements name their columns, so a
nullable undeclared column is left alone — the run warns, succeeds, keeps the column's
data and writes NULL into it for new rows. An undeclared NOT NULL column without a
default would make every insert fail: the run is refused before it writes anything,
naming the column and both fixes.
"""

from __future__ import annotations

from typing import Any

import pytest

from ematix_flow import pipeline
from ematix_flow._errors import DriftError
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text

pytestmark = pytest.mark.db

MODES = ("append", "merge", "scd1", "scd2")
PATHS = ("same_db", "cross_db")
LEFT_ALONE = r"column note \(text NULL\) exists but is not declared; it is left alone"


def _table(name: str, *, with_note: bool) -> type[ManagedTable]:
    body: dict[str, Any] = {
        "__schema__": "wh",
        "__tablename__": name,
        "id": Column(BigInt(), nullable=False, primary_key=True),
        "name": Column(Text()),
    }
    if with_note:
        body["note"] = Column(Text())
    return type(f"T_{name}_{with_note}", (ManagedTable,), body)


def _sync(env: Any, table: type[ManagedTable], mode: str, path: str) -> dict[str, Any]:
    conn = env.source if path == "cross_db" else env.warehouse
    return pipeline.sync(
        target=table,
        source=Source.postgres_table(conn, "src.people"),
        target_connection=env.warehouse,
        mode=mode,
        force_path=path,
    )


def test_an_undeclared_column_is_left_alone_unless_it_would_break_inserts(env: Any) -> None:
    for run in (env.src, env.wh):
        run(
            "CREATE SCHEMA src",
            "CREATE TABLE src.people (id bigint, name text, note text)",
            "INSERT INTO src.people VALUES (1, 'a', 'n1'), (2, 'b', 'n2')",
        )
    cases = [(mode, path) for mode in MODES for path in PATHS]
    for mode, path in cases:
        name = f"{mode}_{path}"
        assert _sync(env, _table(name, with_note=True), mode, path)["status"] == "succeeded"
    for run in (env.src, env.wh):
        run(
            "UPDATE src.people SET name = 'a2' WHERE id = 1",
            "INSERT INTO src.people VALUES (3, 'c', 'n3')",
        )

    for mode, path in cases:
        name = f"{mode}_{path}"
        plain = _table(name, with_note=False)
        with pytest.warns(UserWarning, match=LEFT_ALONE) as seen:
            result = _sync(env, plain, mode, path)
        assert result["status"] == "succeeded", (mode, path, result)
        assert any(f"wh.{name}" in str(w.message) for w in seen)
        notes = env.rows(f"SELECT id, note FROM wh.{name} WHERE note IS NOT NULL ORDER BY id")
        assert notes == [(1, "n1"), (2, "n2")], (mode, path)  # the first run's data is kept
        new = env.rows(f"SELECT name, note FROM wh.{name} WHERE id = 3")
        assert new == [("c", None)], (mode, path)  # new rows: NULL in the undeclared column
        names = env.rows(f"SELECT DISTINCT name FROM wh.{name} WHERE id = 1 ORDER BY 1")
        assert ("a2",) in names, (mode, path)

    # NOT NULL without a default: refused before anything is written.
    for run in (env.src, env.wh):
        run("INSERT INTO src.people VALUES (4, 'd', NULL)")
    for mode, path in cases:
        name = f"{mode}_{path}"
        env.wh(
            f"ALTER TABLE wh.{name} ADD COLUMN strict text NOT NULL DEFAULT 'x'",
            f"ALTER TABLE wh.{name} ALTER COLUMN strict DROP DEFAULT",
        )
        before = env.rows(f"SELECT * FROM wh.{name} ORDER BY 1, 2")
        with pytest.raises(DriftError) as err, pytest.warns(UserWarning, match="note"):
            _sync(env, _table(name, with_note=False), mode, path)
        message = str(err.value)
        assert f"table wh.{name}: column strict (text NOT NULL, no default)" in message
        assert "every insert would fail" in message
        assert "Declare it in the table's class" in message
        assert f"ALTER TABLE wh.{name} DROP COLUMN strict" in message
        assert "SET DEFAULT" in message
        assert env.rows(f"SELECT * FROM wh.{name} ORDER BY 1, 2") == before, (mode, path)
    statuses = env.rows(
        "SELECT status, count(*) FROM ematix_flow.run_history GROUP BY 1 ORDER BY 1"
    )
    assert statuses == [("failed", len(cases)), ("succeeded", 2 * len(cases))]
