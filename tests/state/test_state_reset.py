"""Showing and resetting a pipeline's state, on both paths and in every mode.

Proved here: ``pipeline.state(name)`` / ``DeclaredPipeline.state()`` list one entry per
target with the stored watermark as its type's canonical text (``timestamptz`` and
``bigint``), its column and type, and honest run / failure counts, JSON-ready;
``reset_state`` clears a watermark or sets it to a value parsed in the column's type
(any spelling of the value is stored canonically), reports the watermark before and
after, touches only the target named by ``target=``, refuses a value that does not parse
naming the column and the type, and writes a ``reset`` history row. After a reset the
next run reloads exactly the expected rows: every source row after a reset to ``None``,
the rows from the value on after ``to=`` — seen by changing source values without
touching the watermark column, so only re-read rows can pick the change up.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from ematix_flow import pipeline
from ematix_flow._errors import DefinitionError, EmatixFlowError, SourceError
from tests.state.state_helpers import MODES, PATHS, WATERMARK, table, ts

pytestmark = pytest.mark.db

TS_TYPE = "timestamp with time zone"


def original(g: int) -> tuple[Any, ...]:
    return (g, f"v{g}", ts(g))


def changed(g: int) -> tuple[Any, ...]:
    return (g, f"v{g}*", ts(g))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", MODES)
def test_reset_then_run_reloads_exactly_the_expected_rows(
    project: Any, mode: str, path: str
) -> None:
    project.setup(path)
    pipe = project.load().PIPES[mode, path]
    first = pipe()
    assert first.ok, first
    assert first.results[0].path == path
    assert project.watermark(pipe.name) == WATERMARK
    assert project.current(mode) == [original(g) for g in range(1, 13)]
    # Every value changes, the watermark column does not: only re-read rows change.
    project.src(path, "UPDATE src.events SET val = val || '*'")

    # -- to= a value: the next run reads from that value on ---------------------------
    # keyed modes: exactly row 7's time (the bound is inclusive); append: between rows
    # 6 and 7 (a row at the watermark that append already holds is skipped)
    to, canonical = (
        ("2024-03-03T13:00:00+01:00", "2024-03-03 12:00:00+00")
        if mode == "append"
        else ("2024-03-04T01:00:00+01:00", "2024-03-04 00:00:00+00")
    )
    (action,) = pipe.reset_state(to=to)
    done = action.to_dict()
    assert done["target"] == table(mode)
    assert done["watermark_before"] == WATERMARK
    assert done["watermark_after"] == canonical
    assert done["executed"] is True
    assert project.watermark(pipe.name) == canonical
    assert [s.watermark for s in pipeline.state(pipe.name)] == [canonical]

    report = pipe()
    assert report.ok, report
    result = report.results[0]
    if mode in ("merge", "scd1"):
        assert (result.rows_inserted, result.rows_updated) == (0, 6)
    if mode == "append":
        assert result.rows_inserted == 6
    assert project.watermark(pipe.name) == WATERMARK
    after_value = [original(g) for g in range(1, 7)] + [changed(g) for g in range(7, 13)]
    if mode == "append":
        expected = sorted([original(g) for g in range(1, 13)] + [changed(g) for g in range(7, 13)])
        assert project.target_rows(mode) == expected
    else:
        assert project.current(mode) == after_value
    if mode == "scd2":
        assert project.versions() == {g: 1 if g < 7 else 2 for g in range(1, 13)}

    # -- to=None: the next run reads the whole source ---------------------------------
    (action,) = pipeline.reset_state(pipe.name)
    done = action.to_dict()
    assert (done["watermark_before"], done["watermark_after"]) == (WATERMARK, None)
    assert done["executed"] is True
    assert project.watermark(pipe.name) is None
    report = pipe()
    assert report.ok, report
    result = report.results[0]
    if mode in ("merge", "scd1"):
        assert (result.rows_inserted, result.rows_updated, result.rows_unchanged) == (0, 6, 6)
    if mode == "append":
        assert result.rows_inserted == 12
    assert project.watermark(pipe.name) == WATERMARK
    if mode == "append":
        expected = sorted(
            [original(g) for g in range(1, 13)]
            + [changed(g) for g in range(7, 13)]
            + [changed(g) for g in range(1, 13)]
        )
        assert project.target_rows(mode) == expected
    else:
        assert project.current(mode) == [changed(g) for g in range(1, 13)]
    if mode == "scd2":
        assert project.versions() == {g: 2 for g in range(1, 13)}
    assert [a for a, _ in project.actions(pipe.name)] == ["run", "reset", "run", "reset", "run"]


@pytest.mark.parametrize("path", PATHS)
def test_state_lists_every_target_with_its_typed_watermark(project: Any, path: str) -> None:
    project.setup(path)
    pipes = project.load().PIPES
    multi, by_id = pipes["multi", path], pipes["by_id", path]

    before = pipeline.state(multi.name)
    assert [(s.pipeline, s.target, s.mode) for s in before] == [
        (multi.name, "wh.ev_multi_a", "merge"),
        (multi.name, "wh.ev_multi_b", "scd1"),
    ]
    for s in before:
        assert (s.watermark, s.last_run_at, s.last_status, s.last_success_at) == (None,) * 4
        assert (s.runs, s.failures) == (0, 0)

    assert multi().ok and by_id().ok
    states = multi.state()
    assert [s.to_dict() for s in states] == [s.to_dict() for s in pipeline.state(multi.name)]
    for s in states:
        assert (s.incremental_column, s.column_type, s.watermark) == ("ts", TS_TYPE, WATERMARK)
        assert (s.runs, s.failures, s.last_status) == (1, 0, "succeeded")
        assert isinstance(s.last_run_at, datetime) and s.last_success_at == s.last_run_at
        d = s.to_dict()
        json.dumps(d)  # JSON-ready as it is
        assert {
            "pipeline",
            "target",
            "mode",
            "incremental_column",
            "column_type",
            "watermark",
            "last_run_at",
            "last_status",
            "last_success_at",
            "runs",
            "failures",
        } <= set(d)
        assert datetime.fromisoformat(d["last_run_at"]) == s.last_run_at
        assert datetime.fromisoformat(d["last_success_at"]) == s.last_success_at

    (s,) = by_id.state()
    assert (s.target, s.incremental_column, s.column_type, s.watermark) == (
        "wh.ev_by_id",
        "id",
        "bigint",
        "12",
    )
    # a bigint watermark set from any spelling of the number is stored canonically
    (action,) = by_id.reset_state(to="0042")
    assert action.to_dict()["watermark_after"] == "42"
    assert [s.watermark for s in by_id.state()] == ["42"]


@pytest.mark.parametrize("path", PATHS)
def test_state_counts_runs_and_failures(project: Any, path: str) -> None:
    project.setup(path)
    pipe = project.load().PIPES["merge", path]
    assert pipe().ok
    (ok,) = pipe.state()
    project.src(path, "ALTER VIEW src.events_v RENAME TO gone")
    assert not pipe().ok
    (s,) = pipe.state()
    assert (s.runs, s.failures, s.last_status) == (2, 1, "failed")
    assert s.last_success_at == ok.last_success_at
    assert s.last_run_at > ok.last_run_at
    assert s.watermark == WATERMARK  # a failed run stores no watermark
    project.src(path, "ALTER VIEW src.gone RENAME TO events_v")
    pipe.reset_state()
    (s,) = pipe.state()
    assert s.watermark is None
    assert (s.runs, s.failures) == (2, 1)  # a reset is not a run


@pytest.mark.parametrize("path", PATHS)
def test_reset_touches_only_the_named_target(project: Any, path: str) -> None:
    project.setup(path)
    multi = project.load().PIPES["multi", path]
    assert multi().ok
    project.src(path, "UPDATE src.events SET val = val || '*'")

    actions = pipeline.reset_state(multi.name, target="wh.ev_multi_b")
    assert [a.to_dict()["target"] for a in actions] == ["wh.ev_multi_b"]
    assert project.watermark(multi.name, "wh.ev_multi_a") == WATERMARK
    assert project.watermark(multi.name, "wh.ev_multi_b") is None

    assert multi().ok
    # wh.ev_multi_a re-read only its watermark's row (12); wh.ev_multi_b everything
    assert project.current("multi_a", "merge") == [original(g) for g in range(1, 12)] + [
        changed(12)
    ]
    assert project.current("multi_b", "scd1") == [changed(g) for g in range(1, 13)]

    before = project.snapshot(sequences=False)
    with pytest.raises(EmatixFlowError, match=r"wh\.nope"):
        pipeline.reset_state(multi.name, target="wh.nope")
    assert project.snapshot(sequences=False) == before


@pytest.mark.parametrize("path", PATHS)
def test_reset_to_a_value_that_does_not_parse_names_the_column_and_type(
    project: Any, path: str
) -> None:
    project.setup(path)
    pipes = project.load().PIPES
    by_ts, by_id = pipes["merge", path], pipes["by_id", path]
    assert by_ts().ok and by_id().ok

    with pytest.raises((DefinitionError, SourceError)) as caught:
        by_ts.reset_state(to="the day before yesterday")
    assert "ts" in str(caught.value) and TS_TYPE in str(caught.value), caught.value
    with pytest.raises((DefinitionError, SourceError)) as caught:
        pipeline.reset_state(by_id.name, to="twelve")
    assert "id" in str(caught.value) and "bigint" in str(caught.value), caught.value

    assert project.watermark(by_ts.name) == WATERMARK
    assert project.watermark(by_id.name) == "12"
