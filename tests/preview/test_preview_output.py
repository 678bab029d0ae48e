"""What ``flow preview`` / ``flow dry-run`` print: the compact summary of spec §3.5
(checked against the spec's own example and against checked-in snapshots), the verbose
plan, JSON that is byte-identical across runs and valid against its published schema,
no colour unless a terminal asks for it, exit codes."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from preview_helpers import FLOW, flow, flow_process
from preview_module import MODULE, change_sources, setup_sources
from psycopg.conninfo import conninfo_to_dict

from ematix_flow._exitcodes import ExitCode
from ematix_flow._preview import schema
from ematix_flow._preview.text import compact

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = bool(os.environ.get("EMATIX_FLOW_UPDATE_SNAPSHOTS"))
ANSI = "\x1b["


def load(project: Any) -> str:
    return project.module(f"pv_pipelines_{uuid.uuid4().hex[:8]}", MODULE)


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def line_with(text: str, *parts: str) -> bool:
    """Some line of ``text`` holds every one of ``parts``, in order."""
    for line in text.splitlines():
        at = 0
        for part in parts:
            at = line.find(part, at)
            if at < 0:
                break
            at += len(part)
        else:
            return True
    return False


# --- the compact summary ---------------------------------------------------------------

SPEC_EXAMPLE = """\
sync_user_events   schedule: 0 1 * * *   targets: 3

  ✓ features.daily_features    mode=scd2    keys=(user_id, period_start)   path=same_db
  ✓ features.weekly_features   mode=scd2    keys=(user_id, period_start)   path=same_db
  ✓ events.event_log           mode=append  keys=—                         path=same_db

  --verbose for SQL plans per target
"""


def _planned(target: str, mode: str, keys: list[str]) -> dict[str, Any]:
    return {
        "target": target,
        "mode": mode,
        "outcome": "ok",
        "error": None,
        "path": "same_db",
        "plan": {"keys": {"columns": keys, "reason": "[from pk()]"} if keys else None},
        "rows": None,
    }


def test_compact_summary_is_the_spec_example_line_for_line() -> None:
    keys = ["user_id", "period_start"]
    doc = {
        "action": "preview",
        "pipeline": "sync_user_events",
        "schedule": "0 1 * * *",
        "error": None,
        "targets": [
            _planned("features.daily_features", "scd2", keys),
            _planned("features.weekly_features", "scd2", keys),
            _planned("events.event_log", "append", []),
        ],
    }
    assert "".join(line.plain + "\n" for line in compact(doc)) == SPEC_EXAMPLE


@pytest.mark.db
def test_compact_preview_and_dry_run_match_their_snapshots(project: Any) -> None:
    setup_sources(project)
    module = load(project)
    preview = flow("preview", "pv_fanout", "--module", module)
    assert preview.exit_code == 0, preview.output
    check_snapshot("fanout_preview.txt", preview.stdout)
    assert flow("run", "pv_fanout", "--module", module).exit_code == 0
    change_sources(project)
    dry = flow("dry-run", "pv_fanout", "--module", module)
    assert dry.exit_code == int(ExitCode.RUN_FAILED)
    check_snapshot("fanout_dry_run.txt", dry.stdout)
    assert ANSI not in preview.stdout + dry.stdout


# --- the verbose plan ---------------------------------------------------------------------


@pytest.mark.db
def test_verbose_preview_explains_every_decision(project: Any) -> None:
    setup_sources(project)
    module = load(project)
    assert flow("run", "pv_fanout", "--module", module).exit_code == 0
    out = flow("preview", "pv_fanout", "--module", module, "-v").stdout
    # connections: name → host/db/user and where configured
    assert "warehouse → host " in out and "configured in env EMATIX_FLOW_DSN_WAREHOUSE" in out
    assert "oltp → host " in out and "configured in env EMATIX_FLOW_DSN_OLTP" in out
    assert "cross_db  source (oltp, database " in out and "different databases" in out
    # The path line names the connections briefly; where they point is on their lines.
    path_line = next(line for line in out.splitlines() if line.startswith("  path "))
    host = conninfo_to_dict(os.environ["EMATIX_FLOW_DSN_WAREHOUSE"]).get("host") or "localhost"
    assert host not in path_line and "→" not in path_line
    assert "merge keys          (customer_id)  [from pk()]" in out
    assert "compare columns     (email, name, updated_at)  [default:" in out
    assert "deletes             hard  keys absent from the snapshot are deleted" in out
    assert "watermark           updated_at: " in out
    assert "(stored watermark, compared as timestamp with time zone)" in out
    for column in ("valid_from", "valid_to", "is_current", "row_hash", "_loaded_at", "_batch_id"):
        assert line_with(out, column, "+ framework"), column
    assert line_with(out, "customer_id", "bigint", "NOT NULL", "key")
    assert not line_with(out, "email", "text", "+ framework")
    assert "mart.customer — exists" in out
    assert 'INSERT INTO "mart"."customer"' in out and "DELETE FROM" in out
    assert "expire versions older than ttl" in out
    # one block per target
    assert sum(line.startswith("✓ mart.") for line in out.splitlines()) == 4


@pytest.mark.db
def test_verbose_dry_run_shows_rows_per_statement(project: Any) -> None:
    setup_sources(project)
    module = load(project)
    assert flow("run", "pv_history", "--module", module).exit_code == 0
    change_sources(project)
    result = flow("dry-run", "pv_history", "--module", module)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "✓ hist.local_history   mode=scd2   path=same_db   OK" in out
    assert "would change        inserted=1 updated=1 deleted=1 unchanged=1" in out
    assert "  ✓ rows: expired=0" in out
    assert "✓ rows: updated=1 deleted=1" in out and "✓ rows: written=2" in out
    assert "rolled back" in out
    fanout = flow("dry-run", "pv_fanout", "--module", module, "--verbose").stdout
    assert "✗ mart.customer_strict   mode=merge   path=cross_db   FAILED" in fanout
    assert line_with(fanout, "merge: upsert changed rows", "✗ FAILED")
    assert line_with(fanout, "record run", "not executed")
    assert sum(line.startswith("✓ mart.") for line in fanout.splitlines()) == 3


@pytest.mark.db
def test_drift_to_apply_and_to_refuse(project: Any) -> None:
    setup_sources(project)
    module = load(project)
    assert flow("run", "pv_history", "--module", module).exit_code == 0
    project.sql("warehouse", "ALTER TABLE hist.local_history DROP COLUMN name")
    project.sql("warehouse", "ALTER TABLE hist.local_history ADD COLUMN legacy text")
    out = flow("preview", "pv_history", "--module", module)
    assert out.exit_code == 0, out.output
    assert "drift (apply)" in out.stdout and "name" in out.stdout
    # an undeclared nullable column is no drift to refuse: a warning, left alone
    assert line_with(out.stdout, "warning", "column legacy (text NULL) exists but is not declared")
    assert 'ADD COLUMN IF NOT EXISTS "name"' in out.stdout
    project.sql(
        "warehouse", "ALTER TABLE hist.local_history ALTER COLUMN email TYPE integer USING 0"
    )
    out = flow("preview", "pv_history", "--module", module)
    assert out.exit_code == int(ExitCode.RUN_FAILED)
    assert "✗ hist.local_history" in out.stdout and "drift (refuse)" in out.stdout
    assert "will not change automatically" in out.stdout


# --- JSON ---------------------------------------------------------------------------------


@pytest.mark.db
def test_json_is_byte_identical_across_runs_and_valid(project: Any) -> None:
    setup_sources(project)
    module = load(project)
    assert flow("run", "pv_fanout", "--module", module).exit_code == 0
    change_sources(project)
    validator = jsonschema.Draft202012Validator(schema())
    jsonschema.Draft202012Validator.check_schema(schema())
    for command, code in (("preview", 0), ("dry-run", 1)):
        first = flow_process(command, "pv_fanout", "--module", module, "--format", "json")
        second = flow_process(command, "pv_fanout", "--module", module, "--format", "json")
        assert first.returncode == code, first.stderr
        assert first.stdout == second.stdout
        doc = json.loads(first.stdout)
        validator.validate(doc)
        assert doc["action"] == command.replace("-", "_") and len(doc["targets"]) == 4
    # and a preview with no reachable database is valid too
    unreachable = flow_process(
        "preview",
        "pv_fanout",
        "--module",
        module,
        "--format",
        "json",
        env={"EMATIX_FLOW_DSN_WAREHOUSE": "postgresql://nobody@127.0.0.1:1/wh"},
    )
    validator.validate(json.loads(unreachable.stdout))


def test_the_schema_file_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    assert schema()["properties"]["schema_version"] == {"const": 1}


# --- colour -------------------------------------------------------------------------------


def _on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``flow ARGS`` with stdout on a pseudo-terminal; its exit code and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*FLOW, *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, env=env
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    proc.wait(timeout=300)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.db
def test_colour_only_on_a_terminal_and_never_with_no_color(project: Any) -> None:
    setup_sources(project)
    module = load(project)
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm-256color"
    args = ["preview", "pv_history", "--module", module]
    piped = subprocess.run([*FLOW, *args], capture_output=True, text=True, env=env, check=False)
    assert piped.returncode == 0, piped.stderr
    assert ANSI not in piped.stdout and "+ framework" in piped.stdout
    code, tty = _on_a_terminal(args, env)
    assert code == 0
    assert ANSI in tty and "\x1b[2m" in tty  # framework columns dim
    # --no-color is the root's option: flow --no-color preview …
    for extra, extra_env in ((["--no-color"], {}), ([], {"NO_COLOR": "1"})):
        code, tty = _on_a_terminal(extra + args, {**env, **extra_env})
        assert code == 0 and "framework" in tty
        assert ANSI not in tty, (extra, extra_env)


# --- exit codes ---------------------------------------------------------------------------


@pytest.mark.db
def test_exit_codes(project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    setup_sources(project)
    module = load(project)
    assert flow("preview", "pv_history", "--module", module).exit_code == 0
    assert flow("dry-run", "pv_history", "--module", module).exit_code == 0
    unknown = flow("preview", "no_such_pipeline", "--module", module)
    assert unknown.exit_code != 0 and "no_such_pipeline" in unknown.output
    missing = flow("dry-run", "pv_history", "--module", "pv_no_such_module")
    assert missing.exit_code == int(ExitCode.CONFIG_ERROR)
    monkeypatch.delenv("EMATIX_FLOW_DSN_OLTP")
    unconfigured = flow("preview", "pv_fanout", "--module", module)
    assert unconfigured.exit_code == int(ExitCode.CONFIG_ERROR)
    assert "oltp" in unconfigured.output


BODY = """
from pathlib import Path

from ematix_flow import pipeline


@pipeline.register(name="pv_side_effect")
def pv_side_effect():
    # the documented caveat: the body runs during preview and dry run
    with Path("calls.log").open("a") as log:
        log.write(pipeline.current_action() + "\\n")


@pipeline.register(name="pv_raises")
def pv_raises():
    raise RuntimeError("upstream API unavailable")
"""


def test_the_pipeline_function_runs_and_its_errors_are_shown() -> None:
    module = f"pv_body_{uuid.uuid4().hex[:8]}"
    Path(f"{module}.py").write_text(BODY, encoding="utf-8")
    assert flow("preview", "pv_side_effect", "--module", module).exit_code == 0
    assert flow("dry-run", "pv_side_effect", "--module", module).exit_code == 0
    assert Path("calls.log").read_text().split() == ["preview", "dry_run"]
    text = flow("preview", "pv_raises", "--module", module)
    assert text.exit_code == int(ExitCode.RUN_FAILED)
    assert "✗ pipeline body: pipeline pv_raises raised RuntimeError: upstream API" in text.stdout
    doc = json.loads(flow("dry-run", "pv_raises", "--module", module, "--format", "json").stdout)
    assert not doc["ok"] and doc["targets"] == [] and "RuntimeError" in doc["error"]
    jsonschema.validate(doc, schema())
