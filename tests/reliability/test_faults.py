"""Fault injection on real PostgreSQL, a small count (the full count is
``python scripts/reliability.py``; see docs/reliability.md).

One step of source changes, then one faulted ``flow run`` per pipeline (four modes ×
cross-DB / same-DB), the fault kinds rotating so that each kind of
:data:`reliability_faults.FAULTS` lands at least once: SIGKILL during the COPY, during
the set-based statement, just before COMMIT and at a random moment; the source session
terminated mid-COPY; the server crashed (immediate stop) and restarted mid-run. After
each: the target, its watermark and its run history are the old state or the new one,
never a mix, and the next run converges to the reference warehouse's rows.

It needs a server of its own, whatever ``EMATIX_FLOW_TEST_DSN`` says: it crashes and
restarts the server mid-run. The harness starts a dedicated embedded PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_faults import FAULTS, KILLS, run_trials

pytestmark = [pytest.mark.db, pytest.mark.slow]


def test_faults_leave_old_or_new_state_and_the_next_run_converges(tmp_path: Path) -> None:
    tally = run_trials(tmp_path, steps=1, rows=25_000, seed=9)
    failures = [r.__dict__ for r in tally.failures()]
    assert failures == []
    totals = tally.totals()
    assert totals["rows_lost"] == totals["rows_duplicated"] == totals["secrets_leaked"] == 0
    assert totals["mixed_states"] == 0
    landed = {r.fault for r in tally.landed}
    # Every fault kind but the random kill is aimed at a moment the probe has seen.
    assert landed >= set(FAULTS) - {"kill_random"}, landed
    assert tally.kill_trials >= 5
    assert {r.mode for r in tally.landed if r.fault in KILLS} == {
        "append",
        "merge",
        "scd1",
        "scd2",
    }
