"""``pipeline.register`` / ``run`` / ``dry_run`` / ``preview`` and ``sync``'s result."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from ematix_flow import pipeline
from ematix_flow._core import connect
from ematix_flow._errors import DefinitionError, PipelineNotFoundError, SourceError
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text


class A(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "a"
    id = Column(BigInt(), nullable=False, primary_key=True)
    v = Column(Text())


class B(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "b"
    id = Column(BigInt(), nullable=False, primary_key=True)
    v = Column(Text())


def unique(names: list[str], stem: str) -> str:
    name = f"{stem}_{uuid.uuid4().hex[:6]}"
    names.append(name)
    return name


def test_invalid_cron_is_refused_at_registration() -> None:
    with pytest.raises(
        DefinitionError, match=re.escape("'61 * * * *' is not a valid cron expression")
    ):
        pipeline.register(name="bad_cron", schedule="61 * * * *")


def test_duplicate_names_are_refused(names: list[str]) -> None:
    name = unique(names, "dup")

    @pipeline.register(name=name)
    def first() -> None: ...

    with pytest.raises(DefinitionError, match="registered twice"):

        @pipeline.register(name=name)
        def second() -> None: ...


def test_registry_records_a_frozen_entry(names: list[str]) -> None:
    name = unique(names, "entry")

    @pipeline.register(name=name, schedule="0 * * * *", targets=[A], connections=("warehouse",))
    def body() -> None: ...

    entry = pipeline.get(name)
    assert entry.func is body and entry.module == __name__
    assert entry.to_dict()["targets"] == [
        {"table": "wh.a", "mode": None, "keys": None, "connection": None}
    ]
    with pytest.raises(AttributeError):
        entry.name = "x"  # type: ignore[misc]
    assert name in pipeline.registry()


def test_unknown_pipeline_lists_known_names(names: list[str]) -> None:
    name = unique(names, "known")
    pipeline.register(name=name)(lambda: None)
    with pytest.raises(PipelineNotFoundError, match=name):
        pipeline.get("missing")


def setup(env_dbs: Any) -> tuple[Any, Any]:
    import psycopg

    with psycopg.connect(env_dbs.warehouse_url, autocommit=True) as c:
        c.execute("CREATE TABLE s (id bigint, v text)")
        c.execute("INSERT INTO s VALUES (1, 'x'), (2, 'y')")
    wh = connect(env_dbs.warehouse_url)
    return wh, Source.postgres_query(wh, "SELECT * FROM s")


def two_targets(name: str, wh: Any, good: Source, *, continue_on_failure: bool) -> list[str]:
    seen: list[str] = []
    bad = Source.postgres_query(wh, "SELECT id FROM s")  # no column v

    @pipeline.register(name=name, continue_on_failure=continue_on_failure)
    def body() -> None:
        seen.append(pipeline.current_action())
        pipeline.sync(target=A, source=bad, target_connection=wh, mode="merge")
        seen.append("after first")
        pipeline.sync(target=B, source=good, target_connection=wh, mode="merge")

    return seen


@pytest.mark.db
def test_run_halts_on_first_failure(dbs: Any, names: list[str]) -> None:
    wh, good = setup(dbs)
    name = unique(names, "halt")
    seen = two_targets(name, wh, good, continue_on_failure=False)
    report = pipeline.run(name)
    assert not report.ok and seen == ["run"]
    assert [r.status for r in report.results] == ["failed"]
    assert report.error is None and "column 'v'" in (report.results[0].error or "")


@pytest.mark.db
def test_continue_on_failure_and_dry_run_reach_every_target(dbs: Any, names: list[str]) -> None:
    wh, good = setup(dbs)
    name = unique(names, "cont")
    seen = two_targets(name, wh, good, continue_on_failure=True)
    report = pipeline.run(name)
    assert [r.status for r in report.results] == ["failed", "succeeded"]
    assert seen == ["run", "after first"] and not report.ok
    name2 = unique(names, "dry")
    seen2 = two_targets(name2, wh, good, continue_on_failure=False)
    dry = pipeline.dry_run(name2)
    assert seen2 == ["dry_run", "after first"]
    assert [r.status for r in dry.results] == ["failed", "succeeded"]
    assert dry.results[1].rows_unchanged == 2  # B was already synced by the real run


@pytest.mark.db
def test_preview_writes_nothing_and_is_stable(dbs: Any, names: list[str]) -> None:
    wh, good = setup(dbs)
    name = unique(names, "prev")

    @pipeline.register(name=name)
    def body() -> None:
        assert pipeline.current_action() == "preview"
        pipeline.sync(target=A, source=good, target_connection=wh, mode="scd2")

    first = pipeline.preview(name).to_dict()
    assert first == pipeline.preview(name).to_dict()
    target = first["targets"][0]
    assert target["status"] == "planned" and target["plan"]["table_exists"] is False
    assert target["plan"]["keys"] == ["id"]
    import psycopg

    with psycopg.connect(dbs.warehouse_url, autocommit=True) as c:
        assert c.execute("SELECT to_regclass('wh.a') IS NULL").fetchone() == (True,)


def test_preview_without_a_reachable_database(names: list[str]) -> None:
    name = unique(names, "offline")
    down = connect("postgresql://u:pw@127.0.0.1:1/nowhere")

    @pipeline.register(name=name)
    def body() -> None:
        pipeline.sync(
            target=A,
            source=Source.postgres_table(down, "app.users"),
            target_connection=down,
            mode="merge",
        )

    report = pipeline.preview(name)
    plan = report.results[0].plan
    assert report.ok and plan is not None and plan.table_exists is None
    assert any(u.startswith("target: cannot connect") for u in plan.unknown)
    assert plan.source_sql == 'SELECT "id", "v" FROM "app"."users"'


@pytest.mark.db
def test_sync_outside_a_run_returns_the_result_dict_or_raises(dbs: Any) -> None:
    wh, good = setup(dbs)
    result = pipeline.sync(target=A, source=good, target_connection=wh, mode="merge")
    assert set(result) >= {
        "rows_inserted", "rows_updated", "rows_deleted", "rows_unchanged",
        "path", "batch_id", "duration_s", "status", "target",
    }  # fmt: skip
    assert (result["rows_inserted"], result["path"], result["status"]) == (
        2,
        "same_db",
        "succeeded",
    )
    with pytest.raises(SourceError):
        pipeline.sync(
            target=A,
            source=Source.postgres_query(wh, "SELECT 1 AS id"),
            target_connection=wh,
            mode="merge",
        )


@pytest.mark.db
def test_a_definition_error_in_a_run_is_recorded(dbs: Any) -> None:
    wh, good = setup(dbs)

    class NoKey(ManagedTable):
        __schema__ = "wh"
        __tablename__ = "nokey"
        v = Column(Text())

    with pytest.raises(DefinitionError, match="has no merge keys"):
        pipeline.sync(target=NoKey, source=good, target_connection=wh, mode="merge")
    import psycopg

    with psycopg.connect(dbs.warehouse_url, autocommit=True) as c:
        rows = c.execute("SELECT target, status FROM ematix_flow.run_history").fetchall()
    assert rows == [("wh.nokey", "failed")]
