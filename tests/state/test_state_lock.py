"""State actions never race a run: while a run holds a target's advisory lock, a reset,
a full refresh and a backfill of that target are refused and change nothing — on both
paths.

Proved twice: with the lock held from the test exactly as a run takes it
(``pg_advisory_lock(LOCK_NAMESPACE, hashtext(lock_key(pipeline, target)))``), through the
Python API and the CLI; and with a real run held in the middle of its source read (at a
gate in the source). ``reset_state`` raises ``SyncError`` naming the other run; a full
refresh and a backfill report the target as not done; the target's rows and watermark
are unchanged, and once the lock is free the same actions succeed.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ematix_flow import pipeline
from ematix_flow._errors import EmatixFlowError, SyncError
from tests.state.state_helpers import (
    PATHS,
    SOURCE_DB,
    WATERMARK,
    flow,
    gate,
    holding_target_lock,
    not_ok,
    outcome_text,
    wait_until,
)

pytestmark = pytest.mark.db

FROM, TO = "2024-03-02 00:00:00+00", "2024-03-04 00:00:00+00"


def refused(call: Any) -> str:
    """The message of an action refused because another run holds the target."""
    try:
        out = call()
    except SyncError as exc:
        return str(exc)
    except EmatixFlowError as exc:
        pytest.fail(f"refused with {type(exc).__name__}, not SyncError: {exc}")
    assert not_ok(out), f"expected a refusal, got {out!r}"
    return outcome_text(out)


def ok_reports(reports: Any) -> bool:
    return bool(reports) and all(r.ok for r in reports)


def assert_every_action_refused(project: Any, pipe: Any) -> None:
    rows, watermark = project.current("merge"), project.watermark(pipe.name)
    for message in (
        refused(lambda: pipe.reset_state()),
        refused(lambda: pipeline.reset_state(pipe.name, to="2024-03-01 00:00:00+00")),
        refused(lambda: pipeline.run(pipe.name, full_refresh=True)),
        refused(lambda: pipe.backfill(FROM, TO, step="1d")),
    ):
        assert "run" in message.lower(), message
    assert project.current("merge") == rows
    assert project.watermark(pipe.name) == watermark


@pytest.mark.parametrize("path", PATHS)
def test_state_actions_refuse_while_the_lock_is_held(project: Any, path: str) -> None:
    project.setup(path)
    pipe = project.load().PIPES["merge", path]
    assert pipe().ok
    project.src(path, "UPDATE src.events SET val = val || '*'")
    module = project.module_name

    with holding_target_lock(project.urls["warehouse"], pipe.name, "wh.ev_merge"):
        assert_every_action_refused(project, pipe)
        cli = flow("state", "reset", pipe.name, "--module", module, "--yes")
        assert cli.exit_code != 0 and "run" in cli.output.lower(), cli.output
        cli = flow("backfill", pipe.name, "--module", module, "--from", FROM, "--to", TO)
        assert cli.exit_code != 0, cli.output
        assert project.watermark(pipe.name) == WATERMARK

    # the lock is free: the same actions go through
    assert ok_reports(pipe.backfill(FROM, TO, step="1d"))
    assert [r[1] for r in project.current("merge")][2:6] == ["v3*", "v4*", "v5*", "v6*"]
    (action,) = pipe.reset_state()
    assert action.to_dict()["watermark_after"] is None
    assert pipeline.run(pipe.name, full_refresh=True).ok
    assert project.current("merge") == project.source_rows(path)


@pytest.mark.parametrize("path", PATHS)
def test_state_actions_refuse_while_a_real_run_is_in_progress(project: Any, path: str) -> None:
    project.setup(path)
    pipe = project.load().PIPES["merge", path]
    assert pipe().ok
    project.src(path, "INSERT INTO src.events VALUES (13, 'n13', '2024-03-07 00:00+00')")

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["report"] = pipe()
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    with gate(project.urls[SOURCE_DB[path]]) as g:
        g.close()
        worker.start()
        wait_until(
            "the run to wait at the gate in its source read",
            lambda: g.waiting() > 0,
            timeout=30,
            alive=lambda: None if worker.is_alive() else f"the run ended: {outcome}",
        )
        assert_every_action_refused(project, pipe)
        assert worker.is_alive()
        g.open()
        worker.join(60)
    assert "error" not in outcome, outcome
    assert outcome["report"].ok, outcome["report"]
    assert project.watermark(pipe.name) == "2024-03-07 00:00:00+00"
    (action,) = pipe.reset_state(to=WATERMARK)
    assert action.to_dict()["watermark_before"] == "2024-03-07 00:00:00+00"
