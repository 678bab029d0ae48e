"""A ``flow backfill`` killed with SIGKILL after its first step resumes, when run again,
without duplicating a row — on both paths and in every mode.

The backfill runs ``flow backfill NAME --from 2024-03-01 --to 2024-03-04 --step 1d`` as a
real process: three windows of one day, each its own transaction. Before it starts, the
source changes inside every window (new values with the same times, plus a late row per
window below the watermark), and a gate in the source makes every read of rows from
2024-03-02 on wait. The test waits until the first window's ``backfill`` history row has
committed and the second window is waiting at the gate, then kills the process (no
handler, no clean-up code runs), opens the gate and waits for the orphaned sessions to
end. Proved: only the first window's work is kept (the killed one rolled back and left
no history row); the same command run again exits 0, every window is done, each key
holds one row (one current version for scd2, its history version once), append holds
each late row once and skips the rows it already had, and the watermark stays put.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import pytest

from tests.state.state_helpers import (
    FLOW_BIN,
    MODES,
    PATHS,
    SOURCE_DB,
    WATERMARK,
    dbname,
    flow_process,
    gate,
    other_sessions,
    ts,
    wait_until,
)

pytestmark = pytest.mark.db

CHANGES = (
    "UPDATE src.events SET val = val || '*'",
    "INSERT INTO src.events VALUES (13, 'late 1', '2024-03-01 05:00+00'), "
    "(14, 'late 2', '2024-03-02 05:00+00'), (15, 'late 3', '2024-03-03 05:00+00')",
)
LATE = [
    (13, "late 1", ts(1).replace(hour=5)),
    (14, "late 2", ts(3).replace(hour=5)),
    (15, "late 3", ts(5).replace(hour=5)),
]


def original(g: int) -> tuple[Any, ...]:
    return (g, f"v{g}", ts(g))


def changed(g: int) -> tuple[Any, ...]:
    return (g, f"v{g}*", ts(g))


def expected(mode: str, windows_done: int) -> list[tuple[Any, ...]]:
    """What the target holds (current versions for scd2) after the first
    ``windows_done`` windows: rows 1-2, 3-4, 5-6 and one late row per window."""
    done_rows = range(1, 1 + 2 * windows_done)
    late = LATE[:windows_done]
    if mode == "append":  # rows already held (same key and time) are skipped
        return sorted([original(g) for g in range(1, 13)] + late)
    rows = [changed(g) if g in done_rows else original(g) for g in range(1, 13)]
    return sorted(rows + late)


def backfills(project: Any, name: str) -> list[str]:
    return [s for a, s in project.actions(name) if a == "backfill"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", MODES)
def test_killed_backfill_resumes_without_duplicating_a_row(
    project: Any, mode: str, path: str
) -> None:
    project.setup(path)
    pipe = project.load().PIPES[mode, path]
    assert pipe().ok
    project.src(path, *CHANGES)
    args = (
        "backfill",
        pipe.name,
        "--module",
        project.module_name,
        "--from",
        "2024-03-01",
        "--to",
        "2024-03-04",
        "--step",
        "1d",
    )
    databases = [dbname(u) for u in project.urls.values()]

    with gate(project.urls[SOURCE_DB[path]]) as g:
        g.close(from_ts="2024-03-02 00:00+00")
        proc = subprocess.Popen(
            [FLOW_BIN, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=os.getcwd(),
            env=dict(os.environ),
        )
        try:

            def still_running() -> str | None:
                if proc.poll() is None:
                    return None
                out, err = proc.communicate()
                return f"flow backfill exited {proc.returncode}: {out}{err}"

            wait_until(
                "the first window to commit and the second to wait at the gate",
                lambda: backfills(project, pipe.name) == ["succeeded"] and g.waiting() > 0,
                alive=still_running,
            )
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        # the orphaned sessions read on, find their client gone and roll back
        g.open()
        wait_until(
            "the killed backfill's sessions to end",
            lambda: other_sessions(project.dbs.server_url, databases, g.pids()) == 0,
        )

    rows = project.target_rows(mode) if mode == "append" else project.current(mode)
    assert rows == expected(mode, 1)
    assert backfills(project, pipe.name) == ["succeeded"]
    assert project.watermark(pipe.name) == WATERMARK

    again = flow_process(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    rows = project.target_rows(mode) if mode == "append" else project.current(mode)
    assert rows == expected(mode, 3)
    if mode == "scd2":
        assert project.versions() == {
            **{g: 2 for g in range(1, 7)},
            **{g: 1 for g in range(7, 16)},
        }
    done = backfills(project, pipe.name)
    # the first window may be skipped or done again: either way, each window once more
    assert set(done) == {"succeeded"} and len(done) in (3, 4), done
    assert project.watermark(pipe.name) == WATERMARK
