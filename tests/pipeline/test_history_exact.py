"""Run history tells exactly what happened, never the work that was rolled back.

What is proved:

- A target that fails in its data step (a NULL for a NOT NULL column, arriving after
  an scd2 close already ran in the same transaction) records its ``run_history`` row
  as ``failed`` with NULL ``rows_inserted``/``rows_updated``/``rows_deleted``/
  ``rows_unchanged``, in every mode, on both paths; the target is untouched.
- A declared three-target pipeline whose second target fails, without
  ``continue_on_failure``: the third target gets its own ``not_run`` row in
  ``run_history`` naming the failed target, and the report lists it as ``not_run`` in
  its text and its dict, and so do ``flow run --format json``, ``flow run`` and
  ``flow history --format json`` (both paths).
- A table created for ``merge`` and then synced with ``mode="scd2"`` is refused with a
  message naming both modes and the ways out, not asking to declare the framework's
  own columns nullable; the table is untouched (both paths).
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import pytest
from typer.testing import CliRunner

from ematix_flow import ematix, pipeline, pk
from ematix_flow._cli.main import app
from ematix_flow._errors import EmatixFlowError
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text

pytestmark = pytest.mark.db

PATHS = ["same_db", "cross_db"]
COUNTS = "rows_inserted, rows_updated, rows_deleted, rows_unchanged"


class Person(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "person"
    id = Column(BigInt(), nullable=False)
    name = Column(Text(), nullable=False)


class Member(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "member"
    id = Column(BigInt(), nullable=False, primary_key=True)
    name = Column(Text(), nullable=False)


def sync(env: Any, path: str, mode: str, target: Any = Person) -> dict[str, Any]:
    """``keys=("id",)`` for the keyed modes when the table declares no key."""
    conn = env.source if path == "cross_db" else env.warehouse
    keys = ("id",) if target is Person and mode != "append" else None
    return pipeline.sync(
        target=target,
        source=Source.postgres_query(conn, "SELECT id, name FROM s"),
        target_connection=env.warehouse,
        mode=mode,
        keys=keys,
        force_path=path,
    )


def on_source(env: Any, path: str, *statements: str) -> None:
    (env.src if path == "cross_db" else env.wh)(*statements)


# --- a failed target records no counts -------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", ["append", "merge", "scd1", "scd2"])
def test_failed_target_records_no_row_counts(env: Any, mode: str, path: str) -> None:
    on_source(
        env,
        path,
        "CREATE TABLE s (id bigint, name text)",
        "INSERT INTO s VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    )
    assert sync(env, path, mode)["rows_inserted"] == 3
    before = env.rows("SELECT t::text FROM wh.person AS t ORDER BY 1")
    # key 1 changes (scd2 closes its version first), key 4 carries a NULL name
    on_source(env, path, "UPDATE s SET name = 'A' WHERE id = 1", "INSERT INTO s VALUES (4, NULL)")
    with pytest.raises(EmatixFlowError, match="name"):
        sync(env, path, mode)
    assert env.rows("SELECT t::text FROM wh.person AS t ORDER BY 1") == before
    history = env.rows(f"SELECT status, {COUNTS} FROM ematix_flow.run_history ORDER BY id")
    assert history == [("succeeded", 3, 0, 0, 0), ("failed", None, None, None, None)]


# --- a halted multi-target run: the rest is 'not_run' ---------------------------------


@ematix.table(schema="hist")
class Orders:
    id: Annotated[BigInt, pk()]
    grp: BigInt
    v: Text | None


@ematix.table(schema="hist")
class ByGroup:
    """Keyed by group: the source has two orders in group 10, so this target fails."""

    grp: Annotated[BigInt, pk()]
    v: Text | None


@ematix.table(schema="hist")
class OrderLog:
    id: BigInt
    grp: BigInt
    v: Text | None


SOURCE = (
    "CREATE TABLE public.orders (id bigint, grp bigint, v text)",
    "INSERT INTO public.orders VALUES (1, 10, 'a'), (2, 10, 'b'), (3, 11, 'c')",
)
QUERY = "SELECT id, grp, v FROM public.orders"
FAILED = "hist.by_group"
NOT_RUN = "hist.order_log"
STATUSES = [("hist.orders", "succeeded"), (FAILED, "failed"), (NOT_RUN, "not_run")]


@pytest.fixture
def connections(dbs: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The test databases as the named connections ``warehouse`` and ``oltp``."""
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", dbs.warehouse_url)
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLTP", dbs.source_url)
    return dbs


def declare_halting(name: str, path: str) -> Any:
    targets = [
        ematix.target(Orders, mode="merge"),
        ematix.target(ByGroup, mode="merge"),
        ematix.target(OrderLog, mode="append"),
    ]
    if path == "cross_db":

        @ematix.pipeline(name=name, targets=targets, source_connection="oltp")
        def cross(src_conn, tgt_conn):
            return QUERY

        return cross

    @ematix.pipeline(name=name, targets=targets)
    def same(conn):
        return QUERY

    return same


def assert_not_run_history(env: Any, name: str) -> None:
    rows = env.rows(
        f"SELECT target, status, error, {COUNTS} FROM ematix_flow.run_history "
        "WHERE pipeline = %s ORDER BY id",
        params=(name,),
    )
    assert [(r[0], r[1]) for r in rows] == STATUSES, rows
    assert rows[0][3] == 3  # the first target's work is committed and counted
    assert rows[1][3:] == (None, None, None, None)  # the failed one claims nothing
    assert rows[2][2] and FAILED in rows[2][2], rows[2]  # the reason names the failure


@pytest.mark.parametrize("path", PATHS)
def test_targets_after_a_halt_are_recorded_not_run(
    env: Any, connections: Any, names: list[str], path: str
) -> None:
    on_source(env, path, *SOURCE)
    name = f"halted_{uuid.uuid4().hex[:8]}"
    names.append(name)
    halting = declare_halting(name, path)

    report = halting()
    assert not report.ok
    assert [(r.target, r.status) for r in report.results] == STATUSES
    assert report.results[0].path == path
    skipped = report.results[2]
    assert skipped.error and FAILED in skipped.error
    text = str(report)
    lines = [line for line in text.splitlines() if NOT_RUN in line and "not_run" in line]
    assert lines, text
    assert FAILED in text.split(NOT_RUN, 1)[1], text  # the reason follows the target
    as_dict = report.to_dict()
    assert [(t["target"], t["status"]) for t in as_dict["targets"]] == STATUSES
    assert FAILED in as_dict["targets"][2]["error"]
    json.dumps(as_dict)
    assert not env.rows("SELECT to_regclass('hist.order_log') IS NOT NULL")[0][0]
    assert_not_run_history(env, name)


MODULE = """
from typing import Annotated

from ematix_flow import ematix, pk
from ematix_flow.types import BigInt, Text


@ematix.table(schema="hist")
class Orders:
    id: Annotated[BigInt, pk()]
    grp: BigInt
    v: Text | None


@ematix.table(schema="hist")
class ByGroup:
    grp: Annotated[BigInt, pk()]
    v: Text | None


@ematix.table(schema="hist")
class OrderLog:
    id: BigInt
    grp: BigInt
    v: Text | None


@ematix.pipeline(
    name="{name}",
    targets=[
        ematix.target(Orders, mode="merge"),
        ematix.target(ByGroup, mode="merge"),
        ematix.target(OrderLog, mode="append"),
    ],
    {source}
)
def halting({params}):
    return "{query}"
"""


@pytest.mark.parametrize("path", PATHS)
def test_flow_run_lists_not_run_targets(
    env: Any, connections: Any, names: list[str], monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    on_source(env, path, *SOURCE)
    tag = uuid.uuid4().hex[:8]
    module, name = f"halting_{tag}", f"halting_{tag}"
    names.append(name)
    cross = path == "cross_db"
    Path(f"{module}.py").write_text(
        MODULE.format(
            name=name,
            source='source_connection="oltp",' if cross else "",
            params="src_conn, tgt_conn" if cross else "conn",
            query=QUERY,
        )
    )
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        check_flow_run(env, module, name)
    finally:
        sys.modules.pop(module, None)


def check_flow_run(env: Any, module: str, name: str) -> None:
    runner = CliRunner()

    as_json = runner.invoke(app, ["run", name, "--module", module, "--format", "json"])
    assert as_json.exit_code != 0, as_json.output
    report = json.loads(as_json.stdout)
    assert [(t["target"], t["status"]) for t in report["targets"]] == STATUSES
    assert FAILED in report["targets"][2]["error"]
    assert_not_run_history(env, name)

    as_text = runner.invoke(app, ["run", name, "--module", module])
    assert as_text.exit_code != 0
    lines = [line for line in as_text.stdout.splitlines() if NOT_RUN in line]
    assert lines and "not_run" in lines[0], as_text.stdout

    history = runner.invoke(app, ["history", name, "--module", module, "--format", "json"])
    rows = json.loads(history.stdout)
    assert [r["status"] for r in rows if r["target"] == NOT_RUN] == ["not_run", "not_run"]


# --- a table made for another mode -------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_table_created_for_another_mode_is_refused_naming_both(env: Any, path: str) -> None:
    on_source(env, path, "CREATE TABLE s (id bigint, name text)", "INSERT INTO s VALUES (1, 'a')")
    sync(env, path, "merge", Member)
    before = env.rows("SELECT t::text FROM wh.member AS t ORDER BY 1")
    with pytest.raises(EmatixFlowError) as err:
        sync(env, path, "scd2", Member)
    text = str(err.value)
    assert re.search(r"\bmerge\b", text) and re.search(r"\bscd2\b", text), text
    assert re.search(r"new table|\bdrop|\brename", text, re.IGNORECASE), text
    assert "declare it nullable" not in text, text
    assert env.rows("SELECT t::text FROM wh.member AS t ORDER BY 1") == before
