"""``flow state show | reset``, ``flow run --full-refresh`` and ``flow backfill`` on real
PostgreSQL, with ``--module`` imported from the working directory.

Proved here: ``state show`` lists each target's typed watermark, run counts and last
status (text and JSON, one target with ``--target``; an unknown pipeline exits
CONFIG_ERROR, an unknown target fails naming it); ``state reset`` without ``--yes`` or
``--preview`` and without a terminal refuses with exit code 2 and says to pass
``--yes``, changing nothing, and with ``--yes`` clears or sets the watermark (parsed,
canonical; a value that does not parse fails naming the column and type); ``run
--full-refresh`` rebuilds a target from the whole source, refuses scd2 without
``--discard-history`` (saying so, touching nothing) and rebuilds one target with
``--target``; ``backfill --from --to --step`` rewrites the window in steps (JSON: one
report per step, each naming its window), ``--dry-run`` leaves every row as it was,
``--target`` touches one target, and a step that does not fit the column is refused.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from ematix_flow import pipeline
from ematix_flow._exitcodes import ExitCode
from tests.state.state_helpers import WATERMARK, StateProject, flow, ts

pytestmark = pytest.mark.db


@pytest.fixture
def project(dbs: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[StateProject]:
    """The state tests' project (connections, source, pipelines module); the pipelines
    and the module it registered are forgotten afterwards."""
    before, modules, path = set(pipeline.registry()), set(sys.modules), list(sys.path)
    env = StateProject(dbs, monkeypatch)
    yield env
    env.close()
    for name in set(pipeline.registry()) - before:
        pipeline._unregister(name)
    for name in set(sys.modules) - modules:
        if name.startswith("st_pipes_"):
            sys.modules.pop(name, None)
    sys.path[:] = path


def ran(project: Any, kind: str, path: str) -> str:
    """Set up the source, load the module, run pipeline ``kind`` once; its name."""
    project.setup(path)
    project.load()
    name = f"ev_{kind}_{path}"
    result = flow("run", name, "--module", project.module_name)
    assert result.exit_code == 0, result.output
    return name


def original(g: int) -> tuple[Any, ...]:
    return (g, f"v{g}", ts(g))


def changed(g: int) -> tuple[Any, ...]:
    return (g, f"v{g}*", ts(g))


def test_state_show(project: Any) -> None:
    name = ran(project, "multi", "same_db")
    module = project.module_name

    result = flow("state", "show", name, "--module", module, "--format", "json")
    assert result.exit_code == 0, result.output
    states = json.loads(result.stdout)
    assert [(s["target"], s["mode"], s["watermark"]) for s in states] == [
        ("wh.ev_multi_a", "merge", WATERMARK),
        ("wh.ev_multi_b", "scd1", WATERMARK),
    ]
    for s in states:
        assert (s["incremental_column"], s["column_type"]) == ("ts", "timestamp with time zone")
        assert (s["runs"], s["failures"], s["last_status"]) == (1, 0, "succeeded")
        assert s["last_run_at"] and s["last_success_at"]

    one = flow("state", "show", name, "--module", module, "--target", "wh.ev_multi_b")
    assert one.exit_code == 0, one.output
    assert "wh.ev_multi_b" in one.stdout and "wh.ev_multi_a" not in one.stdout
    assert WATERMARK in one.stdout and "succeeded" in one.stdout
    assert "LAST RUN (UTC)" in one.stdout and "LAST SUCCESS (UTC)" in one.stdout

    missing = flow("state", "show", "nope", "--module", module)
    assert missing.exit_code == ExitCode.CONFIG_ERROR, missing.output
    wrong = flow("state", "show", name, "--module", module, "--target", "wh.nope")
    assert wrong.exit_code != 0 and "wh.nope" in wrong.output, wrong.output


def test_state_reset_asks_for_yes_without_a_terminal(project: Any) -> None:
    name = ran(project, "merge", "cross_db")
    module = project.module_name
    before = project.snapshot()

    for extra in ((), ("--to", "2024-03-01")):
        refused = flow("state", "reset", name, "--module", module, *extra)
        assert refused.exit_code == 2, refused.output
        assert "--yes" in refused.output
    assert project.snapshot() == before

    done = flow(
        "state",
        "reset",
        name,
        "--module",
        module,
        "--to",
        "2024-03-04T01:00:00+01:00",
        "--yes",
        "--format",
        "json",
    )
    assert done.exit_code == 0, done.output
    (action,) = json.loads(done.stdout)
    assert action["target"] == "wh.ev_merge" and action["executed"] is True
    assert (action["watermark_before"], action["watermark_after"]) == (
        WATERMARK,
        "2024-03-04 00:00:00+00",
    )
    assert project.watermark(name) == "2024-03-04 00:00:00+00"

    cleared = flow("state", "reset", name, "--module", module, "--yes")
    assert cleared.exit_code == 0, cleared.output
    assert "wh.ev_merge" in cleared.stdout
    assert project.watermark(name) is None
    assert [a for a, _ in project.actions(name)] == ["run", "reset", "reset"]


def test_state_reset_to_a_value_that_does_not_parse(project: Any) -> None:
    name = ran(project, "merge", "same_db")
    result = flow("state", "reset", name, "--module", project.module_name, "--to", "soon", "--yes")
    assert result.exit_code != 0
    assert "ts" in result.output and "timestamp with time zone" in result.output, result.output
    assert project.watermark(name) == WATERMARK


@pytest.mark.parametrize("path", ["same_db", "cross_db"])
def test_run_full_refresh(project: Any, path: str) -> None:
    project.setup(path)
    project.load()
    module = project.module_name
    merge, scd2, multi = (f"ev_{k}_{path}" for k in ("merge", "scd2", "multi"))
    for name in (merge, scd2, multi):
        assert flow("run", name, "--module", module).exit_code == 0
    project.src(
        path,
        "DELETE FROM src.events WHERE id = 1",
        "UPDATE src.events SET val = 'changed' WHERE id = 2",
    )
    source = project.source_rows(path)

    result = flow("run", merge, "--module", module, "--full-refresh", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True
    assert project.current("merge") == source

    history = project.target_rows("scd2")
    refused = flow("run", scd2, "--module", module, "--full-refresh")
    assert refused.exit_code != 0
    assert "--discard-history" in refused.output, refused.output
    assert project.target_rows("scd2") == history
    result = flow("run", scd2, "--module", module, "--full-refresh", "--discard-history")
    assert result.exit_code == 0, result.output
    assert project.target_rows("scd2") == source

    untouched = project.current("multi_b", "scd1")
    result = flow("run", multi, "--module", module, "--full-refresh", "--target", "wh.ev_multi_a")
    assert result.exit_code == 0, result.output
    assert project.current("multi_a", "merge") == source
    assert project.current("multi_b", "scd1") == untouched


@pytest.mark.parametrize("path", ["same_db", "cross_db"])
def test_backfill(project: Any, path: str) -> None:
    project.setup(path)
    project.load()
    module = project.module_name
    scd1, multi = f"ev_scd1_{path}", f"ev_multi_{path}"
    for name in (scd1, multi):
        assert flow("run", name, "--module", module).exit_code == 0
    project.src(path, "UPDATE src.events SET val = val || '*'")
    window = ("--from", "2024-03-02", "--to", "2024-03-04")

    before = project.snapshot(sequences=False)
    dry = flow("backfill", scd1, "--module", module, *window, "--step", "1d", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert project.snapshot(sequences=False) == before

    result = flow(
        "backfill", scd1, "--module", module, *window, "--step", "12h", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    assert len(reports) == 4 and all(r["ok"] for r in reports)
    starts = ["2024-03-02 00", "2024-03-02 12", "2024-03-03 00", "2024-03-03 12"]
    for report, start in zip(reports, starts, strict=True):
        assert start in json.dumps(report), report
    assert project.current("scd1") == [
        changed(g) if 3 <= g <= 6 else original(g) for g in range(1, 13)
    ]
    assert project.watermark(scd1) == WATERMARK

    result = flow("backfill", multi, "--module", module, *window, "--target", "wh.ev_multi_a")
    assert result.exit_code == 0, result.output
    assert project.current("multi_a", "merge") == [
        changed(g) if 3 <= g <= 6 else original(g) for g in range(1, 13)
    ]
    assert project.current("multi_b", "scd1") == [original(g) for g in range(1, 13)]

    wrong = flow("backfill", scd1, "--module", module, *window, "--step", "1000")
    assert wrong.exit_code != 0 and "step" in wrong.output, wrong.output
