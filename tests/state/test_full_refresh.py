"""Full refresh (``pipeline.run(name, full_refresh=True)``), on both paths and in every mode.

Proved here: a full refresh rebuilds a target from the whole source, ignoring the stored
watermark and storing it anew (the source's maximum): rows the source lost are gone, rows
an incremental run could not see (changed or late below the watermark) arrive, append
holds each source row once, and scd2 with ``discard_history=True`` holds one current
version per key; the next ordinary run changes nothing. Without ``discard_history`` an
scd2 refresh is refused naming ``discard_history`` and how many versions would go, and
touches nothing. ``target=`` rebuilds one target of several. Concurrent readers see the
old rows until the commit, then the new ones, never a half: a second session reads the
target while the refresh is held in the middle of its transaction (at a gate in the
source: for same-DB, only once the refresh's transaction has written), and a reader
polling through the whole refresh only ever sees the old or the new table.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from ematix_flow import pipeline
from ematix_flow._errors import EmatixFlowError
from tests.state.state_helpers import (
    MODES,
    PATHS,
    SOURCE_DB,
    gate,
    not_ok,
    outcome_text,
    table,
    wait_until,
)

pytestmark = pytest.mark.db

#: After the first run: newer versions of rows 5-7 (above the watermark, so an ordinary
#: run loads them: scd2 keeps the old versions as history).
NEWER = "UPDATE src.events SET val = val || '+', ts = '2024-03-06 12:00+00' WHERE id IN (5, 6, 7)"
#: Changes an incremental run cannot see, and one it can.
CHANGES = """
DELETE FROM src.events WHERE id IN (1, 2);
UPDATE src.events SET val = 'changed' WHERE id = 3;
INSERT INTO src.events VALUES (13, 'late', '2024-03-01 05:00+00'),
                              (14, 'new', '2024-03-07 00:00+00');
"""
REFRESHED_WATERMARK = "2024-03-07 00:00:00+00"
KINDS = (*MODES, "append_nokey")


def refresh(pipe: Any, kind: str, **kwargs: Any) -> Any:
    return pipeline.run(pipe.name, full_refresh=True, discard_history=kind == "scd2", **kwargs)


def refusal(call: Callable[[], Any]) -> str:
    """The message of an action that must be refused (raised, or a result not ok)."""
    try:
        out = call()
    except EmatixFlowError as exc:
        return str(exc)
    assert not_ok(out), f"expected a refusal, got {out!r}"
    return outcome_text(out)


def with_history(project: Any, pipe: Any, path: str) -> None:
    """A first run, newer versions of rows 5-7 loaded by a second, then CHANGES."""
    assert pipe().ok
    project.src(path, NEWER)
    assert pipe().ok
    project.src(path, CHANGES)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
def test_full_refresh_leaves_the_target_equal_to_the_source(
    project: Any, kind: str, path: str
) -> None:
    project.setup(path)
    pipe = project.load().PIPES[kind, path]
    with_history(project, pipe, path)
    source = project.source_rows(path)
    assert project.current(kind) != source

    report = refresh(pipe, kind)
    assert report.ok, report
    assert [r.status for r in report.results] == ["succeeded"]
    # every row of the table, every version for scd2: exactly the source, once
    assert project.target_rows(kind) == source
    if kind == "scd2":
        assert project.current(kind) == source
        assert set(project.versions().values()) == {1}
    assert project.watermark(pipe.name) == REFRESHED_WATERMARK
    assert project.actions(pipe.name)[-1] == ("full_refresh", "succeeded")

    again = pipe()  # an ordinary run after it: the stored watermark is right
    assert again.ok, again
    assert again.results[0].rows_inserted == 0 and again.results[0].rows_updated == 0
    assert project.target_rows(kind) == source


@pytest.mark.parametrize("path", PATHS)
def test_scd2_full_refresh_needs_discard_history_and_says_what_would_go(
    project: Any, path: str
) -> None:
    project.setup(path)
    pipe = project.load().PIPES["scd2", path]
    with_history(project, pipe, path)
    versions = len(project.target_rows("scd2"))
    closed = versions - len(project.current("scd2"))
    assert (versions, closed) == (15, 3)
    before_rows, before_wm = project.target_rows("scd2"), project.watermark(pipe.name)

    message = refusal(lambda: pipeline.run(pipe.name, full_refresh=True))
    assert "discard_history" in message or "discard-history" in message, message
    assert re.search(rf"\b({versions}|{closed})\b", message), message
    assert project.target_rows("scd2") == before_rows
    assert project.watermark(pipe.name) == before_wm

    report = pipeline.run(pipe.name, full_refresh=True, discard_history=True)
    assert report.ok, report
    assert project.target_rows("scd2") == project.source_rows(path)


@pytest.mark.parametrize("path", PATHS)
def test_full_refresh_of_one_target_leaves_the_others(project: Any, path: str) -> None:
    project.setup(path)
    multi = project.load().PIPES["multi", path]
    assert multi().ok
    untouched = project.current("multi_b", "scd1")
    project.src(path, CHANGES)

    report = pipeline.run(multi.name, full_refresh=True, target="wh.ev_multi_a")
    assert report.ok, report
    assert [r.target for r in report.results if r.status == "succeeded"] == ["wh.ev_multi_a"]
    assert project.current("multi_a", "merge") == project.source_rows(path)
    assert project.current("multi_b", "scd1") == untouched
    assert project.watermark(multi.name, "wh.ev_multi_a") == REFRESHED_WATERMARK
    assert project.watermark(multi.name, "wh.ev_multi_b") == "2024-03-06 10:00:00+00"
    assert project.q(
        "warehouse",
        "SELECT target FROM ematix_flow.run_history WHERE action = 'full_refresh'",
    ) == [("wh.ev_multi_a",)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", MODES)
def test_readers_see_the_old_rows_until_the_refresh_commits(
    project: Any, kind: str, path: str
) -> None:
    project.setup(path)
    pipe = project.load().PIPES[kind, path]
    with_history(project, pipe, path)
    query = f"SELECT id, val, ts FROM {table(kind)} ORDER BY id, val, ts"
    old, new = project.rows("warehouse", query), project.source_rows(path)
    assert old != new

    seen: list[tuple[Any, ...]] = []
    reader_errors: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        with psycopg.connect(project.urls["warehouse"], autocommit=True) as conn:
            conn.execute("SET lock_timeout = '5s'")
            while not stop.is_set():
                try:
                    seen.append(tuple(conn.execute(query).fetchall()))
                except psycopg.Error as exc:  # a reader made to wait is a failure too
                    reader_errors.append(str(exc))
                    return
                time.sleep(0.005)

    outcome: dict[str, Any] = {}

    def run_refresh() -> None:
        try:
            outcome["report"] = refresh(pipe, kind)
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run_refresh)
    reader = threading.Thread(target=poll)
    with gate(project.urls[SOURCE_DB[path]]) as g:
        # same-DB: the refresh reads its source in its own transaction; hold it there
        # only once that transaction has written something
        g.close(mode="writer" if path == "same_db" else "always")
        reader.start()
        worker.start()
        wait_until(
            "the refresh to reach the gate in its source read",
            lambda: g.waiting() > 0,
            timeout=30,
            alive=lambda: (
                None
                if worker.is_alive()
                else f"the refresh ended without waiting at the gate: {outcome}"
            ),
        )
        with psycopg.connect(project.urls["warehouse"], autocommit=True) as second:
            second.execute("SET lock_timeout = '2s'")
            during = second.execute(query).fetchall()
            count = second.execute(f"SELECT count(*) FROM {table(kind)}").fetchone()[0]
        assert worker.is_alive(), outcome
        assert during == old and count == len(old)
        g.open()
        worker.join(60)
    stop.set()
    reader.join(10)
    assert "error" not in outcome, outcome
    assert outcome["report"].ok, outcome["report"]
    after = project.rows("warehouse", query)
    assert after == new
    assert not reader_errors, reader_errors
    assert set(seen) <= {tuple(old), tuple(new)}, "a reader saw a half-refreshed table"
    assert tuple(old) in seen
