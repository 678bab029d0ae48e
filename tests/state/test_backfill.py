"""Backfilling a window (``pipeline.backfill`` / ``DeclaredPipeline.backfill``), on both
paths and in every mode.

Proved here: a backfill of ``[start, end)`` rewrites exactly the rows with
``start <= incremental_column < end`` — source values changed inside and outside the
window without touching the watermark column, and only the ones inside arrive (the start
is included, the end is not) — one ``backfill`` history row per step, with the stored
watermark left where it was; doing the window again (in other steps) changes nothing in
the keyed modes (no second scd2 version); append with a declared key loads only the
window's rows it does not hold yet, append without a key is refused saying a key is
needed; a window that passes the watermark moves it to the maximum seen (and the next
ordinary run goes on from there); a backfill whose second step fails stops there, keeps
the first, and run again completes the rest without duplicating a row; numeric columns
step by a count; ``target=`` touches
one target of several; ``dry_run=True`` executes and leaves every row as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from ematix_flow import pipeline
from ematix_flow._errors import DefinitionError, EmatixFlowError
from tests.state.state_helpers import KEYED, PATHS, WATERMARK, ts

pytestmark = pytest.mark.db

CHANGE_ALL = "UPDATE src.events SET val = val || '*'"
FROM, TO = "2024-03-02 00:00:00+00", "2024-03-04 00:00:00+00"
#: Rows 3-6 (2024-03-02 00:00 to 2024-03-03 10:00) lie in [FROM, TO); row 7 is at TO.
INSIDE = range(3, 7)


def original(g: int) -> tuple[Any, ...]:
    return (g, f"v{g}", ts(g))


def changed(g: int) -> tuple[Any, ...]:
    return (g, f"v{g}*", ts(g))


def ok(reports: Any) -> bool:
    return bool(reports) and all(r.ok for r in reports)


def refusal(call: Callable[[], Any]) -> BaseException:
    """The error of a backfill that must be refused: raised, or carried by the failed
    target of a report it returns."""
    try:
        reports = call()
    except EmatixFlowError as exc:
        return exc
    failed = [t for r in reports for t in r.results if t.status == "failed"]
    assert failed and all(not r.ok for r in reports), f"expected a refusal, got {reports!r}"
    assert failed[0].exception is not None, failed[0]
    return failed[0].exception


def backfills(project: Any, pipeline_name: str) -> list[str]:
    return [s for a, s in project.actions(pipeline_name) if a == "backfill"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", KEYED)
def test_backfill_rewrites_exactly_its_window(project: Any, mode: str, path: str) -> None:
    project.setup(path)
    pipe = project.load().PIPES[mode, path]
    assert pipe().ok
    project.src(path, CHANGE_ALL)

    reports = pipe.backfill(FROM, TO, step="1d")
    assert ok(reports), reports
    expected = [changed(g) if g in INSIDE else original(g) for g in range(1, 13)]
    assert project.current(mode) == expected
    if mode == "scd2":
        assert project.versions() == {g: 2 if g in INSIDE else 1 for g in range(1, 13)}
    assert project.watermark(pipe.name) == WATERMARK
    assert project.actions(pipe.name) == [("run", "succeeded")] + [("backfill", "succeeded")] * 2

    # the same window again, in one step this time: nothing changes
    reports = pipeline.backfill(pipe.name, FROM, TO)
    assert ok(reports), reports
    assert project.current(mode) == expected
    if mode == "scd2":
        assert project.versions() == {g: 2 if g in INSIDE else 1 for g in range(1, 13)}
    assert project.watermark(pipe.name) == WATERMARK

    # an ordinary run still reads from the stored watermark only (row 12's change)
    assert pipe().ok
    assert project.current(mode) == [*expected[:11], changed(12)]


@pytest.mark.parametrize("path", PATHS)
def test_backfill_into_append_loads_only_the_rows_it_lacks(project: Any, path: str) -> None:
    project.setup(path)
    pipe = project.load().PIPES["append", path]
    assert pipe().ok
    project.src(
        path,
        CHANGE_ALL,  # rows already loaded (same key and time): skipped, not loaded again
        "INSERT INTO src.events VALUES (13, 'late in', '2024-03-02 05:00+00'), "
        "(14, 'late out', '2024-03-05 05:00+00'), (15, 'at the end', '2024-03-04 00:00+00')",
    )
    reports = pipe.backfill(FROM, TO, step="1d")
    assert ok(reports), reports
    late = (13, "late in", ts(3).replace(hour=5))
    expected = sorted([original(g) for g in range(1, 13)] + [late])
    assert project.target_rows("append") == expected
    assert project.watermark(pipe.name) == WATERMARK

    reports = pipe.backfill(FROM, TO, step="12h")  # again, other steps: nothing new
    assert ok(reports), reports
    assert project.target_rows("append") == expected
    assert project.q(
        "warehouse", "SELECT count(DISTINCT _batch_id) FROM wh.ev_append WHERE id = 13"
    ) == [(1,)]


@pytest.mark.parametrize("path", PATHS)
def test_backfill_into_append_without_a_key_is_refused(project: Any, path: str) -> None:
    project.setup(path)
    pipe = project.load().PIPES["append_nokey", path]
    assert pipe().ok
    project.src(path, "INSERT INTO src.events VALUES (13, 'late', '2024-03-02 05:00+00')")
    before = project.target_rows("append_nokey")
    error = refusal(lambda: pipe.backfill(FROM, TO, step="1d"))
    assert isinstance(error, DefinitionError), repr(error)
    assert re.search(r"(?i)\bkey", str(error)), error
    assert project.target_rows("append_nokey") == before
    assert project.watermark(pipe.name) == WATERMARK
    assert ("backfill", "succeeded") not in project.actions(pipe.name)


@pytest.mark.parametrize("path", PATHS)
def test_a_window_past_the_watermark_moves_it_to_the_max_seen(project: Any, path: str) -> None:
    project.setup(path)
    pipe = project.load().PIPES["merge", path]
    assert pipe().ok
    project.src(
        path,
        "INSERT INTO src.events VALUES (13, 'n13', '2024-03-07 00:00+00'), "
        "(14, 'n14', '2024-03-09 00:00+00')",
    )
    reports = pipe.backfill("2024-03-06 00:00:00+00", "2024-03-08 00:00:00+00")
    assert ok(reports), reports
    assert [r[0] for r in project.current("merge")] == list(range(1, 14))
    assert project.watermark(pipe.name) == "2024-03-07 00:00:00+00"
    assert backfills(project, pipe.name) == ["succeeded"]

    assert pipe().ok  # the next ordinary run goes on from there
    assert [r[0] for r in project.current("merge")] == list(range(1, 15))
    assert project.watermark(pipe.name) == "2024-03-09 00:00:00+00"


@pytest.mark.parametrize("path", PATHS)
def test_a_numeric_column_steps_by_a_count(project: Any, path: str) -> None:
    project.setup(path)
    pipe = project.load().PIPES["by_id", path]
    assert pipe().ok
    project.src(path, CHANGE_ALL)
    reports = pipe.backfill("3", "9", step=4)  # [3, 7) and [7, 9)
    assert ok(reports), reports
    assert project.current("by_id", "merge") == [
        changed(g) if 3 <= g < 9 else original(g) for g in range(1, 13)
    ]
    assert backfills(project, pipe.name) == ["succeeded", "succeeded"]
    assert project.watermark(pipe.name) == "12"


@pytest.mark.parametrize("path", PATHS)
def test_backfill_of_one_target_leaves_the_others(project: Any, path: str) -> None:
    project.setup(path)
    multi = project.load().PIPES["multi", path]
    assert multi().ok
    project.src(path, CHANGE_ALL)
    reports = multi.backfill(FROM, TO, target="wh.ev_multi_b")
    assert ok(reports), reports
    assert project.current("multi_a", "merge") == [original(g) for g in range(1, 13)]
    assert project.current("multi_b", "scd1") == [
        changed(g) if g in INSIDE else original(g) for g in range(1, 13)
    ]
    assert project.q(
        "warehouse",
        "SELECT target, status FROM ematix_flow.run_history WHERE action = 'backfill'",
    ) == [("wh.ev_multi_b", "succeeded")]


@pytest.mark.parametrize("path", PATHS)
def test_backfill_dry_run_leaves_every_row_as_it_was(project: Any, path: str) -> None:
    project.setup(path)
    pipe = project.load().PIPES["scd2", path]
    assert pipe().ok
    project.src(path, CHANGE_ALL)
    before = project.snapshot(sequences=False)  # a rolled-back insert still draws an id
    reports = pipe.backfill(FROM, TO, step="1d", dry_run=True)
    assert ok(reports), reports
    assert [r.action for r in reports] == ["dry_run", "dry_run"]
    # the dry run did the work: each window's two changed keys got a new version
    assert [r.results[0].rows_updated for r in reports] == [2, 2]
    assert project.snapshot(sequences=False) == before


#: A source that fails on the second day's rows while src.flag says so: the target's
#: val is NOT NULL.
BREAKABLE = """
CREATE TABLE src.flag (broken boolean NOT NULL);
INSERT INTO src.flag VALUES (true);
CREATE OR REPLACE VIEW src.events_v AS
SELECT id,
       CASE WHEN ts >= '2024-03-02 00:00+00' AND ts < '2024-03-03 00:00+00'
                 AND (SELECT broken FROM src.flag) THEN NULL ELSE val END AS val,
       ts
FROM src.events;
"""
LATE = (
    "INSERT INTO src.events VALUES (13, 'late 1', '2024-03-01 05:00+00'), "
    "(14, 'late 2', '2024-03-02 05:00+00'), (15, 'late 3', '2024-03-03 05:00+00')"
)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", ["merge", "append"])
def test_a_failed_backfill_resumes_where_it_stopped(project: Any, mode: str, path: str) -> None:
    project.setup(path)
    pipe = project.load().PIPES[mode, path]
    assert pipe().ok
    project.src(path, CHANGE_ALL, LATE, BREAKABLE)
    late = [(13, "late 1", ts(1).replace(hour=5)), (14, "late 2", ts(3).replace(hour=5))]
    late.append((15, "late 3", ts(5).replace(hour=5)))

    def held(days: int) -> list[tuple[Any, ...]]:
        if mode == "append":  # rows already held (same key and time) are skipped
            return sorted([original(g) for g in range(1, 13)] + late[:days])
        return sorted(
            [changed(g) if g <= 2 * days else original(g) for g in range(1, 13)] + late[:days]
        )

    first = pipe.backfill("2024-03-01", "2024-03-04", step="1d")
    assert [r.ok for r in first] == [True, False]  # the failed step stops the backfill
    rows = project.target_rows(mode) if mode == "append" else project.current(mode)
    assert rows == held(1)
    assert backfills(project, pipe.name) == ["succeeded", "failed"]

    project.src(path, "UPDATE src.flag SET broken = false")
    again = pipe.backfill("2024-03-01", "2024-03-04", step="1d")
    assert ok(again), again
    rows = project.target_rows(mode) if mode == "append" else project.current(mode)
    assert rows == held(3)
    assert project.watermark(pipe.name) == WATERMARK
