"""Every state action's preview executes nothing, and its ``--format json`` is stable.

Proved here, on both paths: ``reset_state(preview=True)`` / ``flow state reset --preview``,
``backfill(preview=True)`` / ``flow backfill --preview``, ``flow preview --full-refresh``
and ``flow state show`` leave both databases exactly as they were — every relation of
the user schemas (name and kind), every column, every row (targets, source, watermarks,
run history) and where each sequence stands — and two invocations print identical JSON.
A reset preview says what the next run would read: the watermark it would use, the
filtered source SQL and an estimated row count (the whole source's, when cleared). A
backfill preview lists its windows, each with the SQL it would run. A full-refresh
preview of scd2 says how many versions would go.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from ematix_flow import pipeline
from ematix_flow._errors import DefinitionError, SourceError
from tests.state.state_helpers import PATHS, WATERMARK, flow, ts

pytestmark = pytest.mark.db

FROM, TO = "2024-03-02 00:00:00+00", "2024-03-04 00:00:00+00"


def ready(project: Any, path: str, kind: str = "merge") -> Any:
    """A first run, then changes in the source no incremental run has seen yet."""
    project.setup(path)
    pipe = project.load().PIPES[kind, path]
    assert pipe().ok
    project.src(
        path,
        "UPDATE src.events SET val = val || '*'",
        "INSERT INTO src.events VALUES (13, 'late', '2024-03-02 05:00+00')",
        "ANALYZE src.events",
    )
    return pipe


def cli_twice(*args: str) -> str:
    first, second = flow(*args), flow(*args)
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert first.stdout == second.stdout
    return first.stdout


@pytest.mark.parametrize("path", PATHS)
def test_reset_preview_executes_nothing_and_shows_the_next_read(project: Any, path: str) -> None:
    pipe = ready(project, path)
    before = project.snapshot()

    (from_value,) = pipe.reset_state(to="2024-03-04T01:00:00+01:00", preview=True)
    (cleared,) = pipeline.reset_state(pipe.name, preview=True)
    assert project.snapshot() == before

    d, c = from_value.to_dict(), cleared.to_dict()
    json.dumps([d, c])
    assert d["target"] == "wh.ev_merge" and d["executed"] is False
    assert d["watermark_before"] == WATERMARK
    assert "src.events_v" in d["source_sql"] and '"ts"' in d["source_sql"]
    assert isinstance(d["estimated_rows"], int) and 0 <= d["estimated_rows"] <= 13
    assert (c["watermark_before"], c["watermark_after"], c["executed"]) == (WATERMARK, None, False)
    assert "src.events_v" in c["source_sql"] and c["source_sql"] != d["source_sql"]
    assert c["estimated_rows"] == 13  # the whole (analyzed) source

    # the previews changed nothing: the next run still reads from the stored watermark
    # (row 12's change; not the late row 13, nor the changes below the watermark)
    assert pipe().ok
    assert project.current("merge") == [(g, f"v{g}", ts(g)) for g in range(1, 12)] + [
        (12, "v12*", ts(12))
    ]

    # what the reset would store: the value parsed in the column's type, as its canonical
    # text (the same as the reset itself reports), and a value that does not parse is
    # refused as the reset refuses it
    assert d["watermark_after"] == "2024-03-04 00:00:00+00"
    with pytest.raises((DefinitionError, SourceError)) as caught:
        pipe.reset_state(to="not a time", preview=True)
    assert "ts" in str(caught.value) and "timestamp with time zone" in str(caught.value)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["merge", "append"])
def test_backfill_preview_executes_nothing_and_lists_its_windows(
    project: Any, kind: str, path: str
) -> None:
    pipe = ready(project, path, kind)
    before = project.snapshot()
    reports = pipe.backfill(FROM, TO, step="1d", preview=True)
    assert project.snapshot() == before

    assert [r.action for r in reports] == ["preview", "preview"]
    docs = [r.to_dict() for r in reports]
    # each step names its window
    for doc, (lo, hi) in zip(docs, [("03-02", "03-03"), ("03-03", "03-04")], strict=True):
        text = json.dumps(doc)
        assert f"2024-{lo}" in text and f"2024-{hi}" in text, doc
    for r in reports:
        (t,) = r.results
        assert t.status == "planned"
        assert "src.events_v" in "\n".join(s.sql for s in t.plan.steps)
    again = pipe.backfill(FROM, TO, step="1d", preview=True)
    assert json.dumps([r.to_dict() for r in again]) == json.dumps(docs)


@pytest.mark.parametrize("path", PATHS)
def test_cli_previews_and_show_execute_nothing_and_print_stable_json(
    project: Any, path: str
) -> None:
    pipe = ready(project, path)
    module = project.module_name
    before = project.snapshot()

    shown = json.loads(
        cli_twice("state", "show", pipe.name, "--module", module, "--format", "json")
    )
    assert [(s["target"], s["watermark"]) for s in shown] == [("wh.ev_merge", WATERMARK)]

    reset = json.loads(
        cli_twice(
            "state",
            "reset",
            pipe.name,
            "--module",
            module,
            "--to",
            "2024-03-04",
            "--preview",
            "--format",
            "json",
        )
    )
    assert [(a["target"], a["executed"]) for a in reset] == [("wh.ev_merge", False)]
    assert reset[0]["source_sql"] and isinstance(reset[0]["estimated_rows"], int)

    back = cli_twice(
        "backfill",
        pipe.name,
        "--module",
        module,
        "--from",
        FROM,
        "--to",
        TO,
        "--step",
        "1d",
        "--preview",
        "--format",
        "json",
    )
    assert len(json.loads(back)) == 2 and "src.events_v" in back

    refresh = cli_twice(
        "preview", pipe.name, "--module", module, "--full-refresh", "--format", "json"
    )
    assert "src.events_v" in refresh

    assert project.snapshot() == before
    assert project.watermark(pipe.name) == WATERMARK
    # the preview shows the value the reset would store (parsed, canonical)
    assert reset[0]["watermark_after"] == "2024-03-04 00:00:00+00"


@pytest.mark.parametrize("path", PATHS)
def test_scd2_full_refresh_preview_says_how_many_versions_would_go(project: Any, path: str) -> None:
    project.setup(path)
    pipe = project.load().PIPES["scd2", path]
    assert pipe().ok
    project.src(
        path,
        "UPDATE src.events SET val = val || '+', ts = '2024-03-06 12:00+00' WHERE id <= 5",
    )
    assert pipe().ok
    versions = len(project.target_rows("scd2"))
    closed = versions - len(project.current("scd2"))
    assert (versions, closed) == (17, 5)
    before = project.snapshot()
    for extra in ((), ("--discard-history",)):
        out = flow("preview", pipe.name, "--module", project.module_name, "--full-refresh", *extra)
        assert re.search(rf"\b({versions}|{closed})\b", out.output), out.output
    assert project.snapshot() == before
