"""A dry run executes every statement and rolls it back: source, target, watermarks and
run history are the same row for row afterwards — with hard deletes, multi-statement
SCD2 plans (ttl, close + insert, deleted keys) on both paths, a first run on an empty
warehouse, and a multi-target pipeline whose third target fails (every target is still
dry-run and marked)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from preview_helpers import flow
from preview_module import MODULE, change_sources, setup_sources

from ematix_flow import pipeline

pytestmark = pytest.mark.db


def load(project: Any) -> str:
    module = project.module(f"pv_pipelines_{uuid.uuid4().hex[:8]}", MODULE)
    return module


def test_first_dry_run_on_an_empty_warehouse_creates_nothing(project: Any) -> None:
    setup_sources(project)
    module = load(project)
    before = project.snapshot()
    for name in ("pv_fanout", "pv_history"):
        assert flow("preview", name, "--module", module).exit_code == 0
        result = flow("dry-run", name, "--module", module, "--format", "json")
        doc = json.loads(result.stdout)
        # every target ran its statements: the tables would be created and filled
        inserted = [t["rows"]["inserted"] for t in doc["targets"] if t["rows"]]
        assert inserted and all(n == 3 for n in inserted), doc
        assert all(t["plan"]["table_exists"] is False for t in doc["targets"])
    assert project.snapshot() == before
    # not even the state schema or the target schemas
    assert project.rows("warehouse", "SELECT to_regnamespace('ematix_flow')") == [(None,)]
    assert project.rows("warehouse", "SELECT to_regnamespace('mart')") == [(None,)]


def test_dry_run_after_changes_leaves_every_row_as_it_was(project: Any) -> None:
    setup_sources(project)
    module = load(project)
    first = flow("run", "pv_fanout", "--module", module)
    assert first.exit_code == 0, first.output
    assert flow("run", "pv_history", "--module", module).exit_code == 0
    change_sources(project)
    before = project.snapshot()
    assert before["warehouse"]["ematix_flow.watermarks"], "the append target stored one"
    assert len(before["warehouse"]["ematix_flow.run_history"]) == 5

    result = flow("dry-run", "pv_fanout", "--module", module, "--format", "json")
    history = flow("dry-run", "pv_history", "--module", module, "--format", "json")
    assert result.exit_code == 1, result.output  # the strict target would fail
    assert history.exit_code == 0, history.output
    assert project.snapshot() == before

    doc = json.loads(result.stdout)
    by = {t["target"]: t for t in doc["targets"]}
    # every target was dry-run although the pipeline halts on failure in a real run
    assert not pipeline.get("pv_fanout").continue_on_failure
    assert [t["outcome"] for t in doc["targets"]] == ["ok", "ok", "failed", "ok"]
    assert by["mart.customer_log"]["rows"]["inserted"] == 2  # 1 changed + 4 new (> watermark)
    assert by["mart.customer_log"]["rows"]["watermark_after"] is not None
    merge = by["mart.customer"]["rows"]
    assert (merge["inserted"], merge["updated"], merge["deleted"]) == (1, 1, 1)
    strict = by["mart.customer_strict"]
    assert strict["rows"] is None and "'name'" in strict["error"] and "NULL" in strict["error"]
    statuses = {s["label"]: s["status"] for s in strict["plan"]["steps"]}
    assert statuses == {
        "create stage": "executed",
        "copy source → stage": "executed",
        "check: each key once in the batch": "executed",
        "merge: upsert changed rows": "failed",  # the statement the NULL stopped
        "record run": "not_executed",
    }
    scd2 = by["mart.customer_history"]
    assert (scd2["rows"]["inserted"], scd2["rows"]["updated"]) == (1, 1)
    data_steps = [s for s in scd2["plan"]["steps"] if s["kind"] == "data"]
    assert len(data_steps) == 3 and all(s["status"] == "executed" for s in data_steps)
    assert "expire" in data_steps[0]["label"]

    local = json.loads(history.stdout)["targets"][0]
    assert local["path"] == "same_db"
    assert [s["kind"] for s in local["plan"]["steps"]].count("data") == 4
    assert (local["rows"]["inserted"], local["rows"]["updated"]) == (1, 1)
    assert local["rows"]["deleted"] == 1  # key 3's current version would be closed


def test_python_dry_run_of_a_decorated_pipeline_leaves_no_trace(project: Any) -> None:
    setup_sources(project)
    module = load(project)
    assert flow("run", "pv_history", "--module", module).exit_code == 0
    change_sources(project)
    before = project.snapshot()
    import importlib

    declared = importlib.import_module(module).pv_history
    report = declared.dry_run()
    assert report.ok and report.results[0].rows_updated == 1
    assert project.snapshot() == before


def test_preview_writes_nothing_even_where_writing_is_impossible(project: Any) -> None:
    """Both databases made read-only: a preview still inspects them and plans every
    target; a dry run reports that it cannot write, for every target."""
    setup_sources(project)
    module = load(project)
    assert flow("run", "pv_fanout", "--module", module).exit_code == 0
    change_sources(project)
    for which in ("warehouse", "oltp"):
        database = project.rows(which, "SELECT current_database()")[0][0]
        project.sql(which, f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    before = project.snapshot()
    preview = flow("preview", "pv_fanout", "--module", module, "--format", "json")
    assert preview.exit_code == 0, preview.output
    doc = json.loads(preview.stdout)
    assert all(t["plan"]["table_exists"] is True for t in doc["targets"])
    assert doc["targets"][0]["plan"]["watermark"]["value"] not in (None, "unknown")
    dry = json.loads(flow("dry-run", "pv_fanout", "--module", module, "--format", "json").stdout)
    assert [t["outcome"] for t in dry["targets"]] == ["failed"] * 4
    assert all("read-only transaction" in t["error"] for t in dry["targets"])
    assert project.snapshot() == before
