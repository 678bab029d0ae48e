"""One error convention for every command, seen through the real ``flow`` process:
stdout carries the result (a failed target is marked there), each failure is an
``error: <message>`` line on stderr, and the exit code is the documented one. None of
these failures needs a database: the connections are simply not configured."""

from __future__ import annotations

import os
import subprocess
from typing import NamedTuple

import pytest

from ematix_flow._exitcodes import ExitCode
from tests.cli.test_main import run_flows

MODULE = """\
from ematix_flow import pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column


class T(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "t"
    id = Column(BigInt(), nullable=False, primary_key=True)


@pipeline.register(name="scheduled", schedule="0 * * * *", connections=("warehouse",))
def scheduled():
    pass


@pipeline.register(name="d", targets=[T])
def d():
    pipeline.sync(target=T, source=Source.postgres_query("crm", "SELECT 1 AS id"),
                  target_connection="warehouse", mode="merge", incremental_column="id")


@pipeline.register(name="body")
def body():
    raise RuntimeError("the body failed")
"""


class Case(NamedTuple):
    args: tuple[str, ...]
    code: ExitCode
    error: str  # in the one error: line on stderr
    #: preview, dry-run and connections check are reports of reasons: the reason is on
    #: stdout too (under the target), the error line names what failed
    report_says_why: bool = False


M = ("--module", "pipes")
NOT_CONFIGURED = "no connection named 'warehouse' is configured"
CASES = {
    "run": Case(("run", "d", *M), ExitCode.CONFIG_ERROR, NOT_CONFIGURED),
    "run-body": Case(("run", "body", *M), ExitCode.RUN_FAILED, "pipeline body raised RuntimeError"),
    "run-due": Case(
        ("run-due", *M), ExitCode.CONFIG_ERROR, "pipeline scheduled: cannot tell when it last ran"
    ),
    "history": Case(("history", "scheduled", *M), ExitCode.CONFIG_ERROR, NOT_CONFIGURED),
    "preview": Case(
        ("preview", "d", *M), ExitCode.CONFIG_ERROR, "pipeline d: would fail: wh.t", True
    ),
    "dry-run": Case(
        ("dry-run", "d", *M), ExitCode.CONFIG_ERROR, "pipeline d: would fail: wh.t", True
    ),
    "list": Case(("list", "--module", "nowhere"), ExitCode.CONFIG_ERROR, "cannot import module"),
    "state-show": Case(
        ("state", "show", "nope", *M), ExitCode.CONFIG_ERROR, "no pipeline named 'nope'"
    ),
    "state-reset": Case(("state", "reset", "d", *M), ExitCode.USAGE, "pass --yes"),
    "backfill": Case(
        ("backfill", "d", *M, "--from", "1", "--to", "2"), ExitCode.CONFIG_ERROR, NOT_CONFIGURED
    ),
    "export-k8s": Case(
        ("export-k8s", "--module", "unscheduled", "--image", "img:1"),
        ExitCode.CONFIG_ERROR,
        "registers no scheduled pipeline",
    ),
    "connections-check": Case(
        ("connections", "check"),
        ExitCode.RUN_FAILED,
        "1 of 1 connections failed the check: refused",
        True,
    ),
    "connections-set": Case(("connections", "set", "oops"), ExitCode.USAGE, "expected NAME=DSN"),
    "connections-remove": Case(
        ("connections", "remove", "nowhere", "--yes"), ExitCode.CONFIG_ERROR, "is saved in"
    ),
    "dev-db-start": Case(
        ("dev-db", "start", "--name", "bad name"), ExitCode.CONFIG_ERROR, "invalid connection name"
    ),
    "dev-db-url": Case(("dev-db", "url", "--name", "x"), ExitCode.RUN_FAILED, "is not running"),
}


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every case's command, run side by side in a fresh project folder and HOME."""
    folder = tmp_path_factory.mktemp("convention")
    (folder / "pipes.py").write_text(MODULE)
    (folder / "unscheduled.py").write_text("X = 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMATIX_FLOW_DSN")}
    env.update(
        HOME=str(folder / "home"),
        NO_COLOR="1",
        EMATIX_FLOW_DSN_REFUSED="postgresql://app@127.0.0.1:1/db",  # nothing listens on 1
    )
    done = run_flows(*(case.args for case in CASES.values()), cwd=folder, env=env)
    return dict(zip(CASES, done, strict=True))


@pytest.mark.parametrize("name", CASES)
def test_a_failure_is_an_error_line_on_stderr_and_its_exit_code(
    name: str, results: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    case, result = CASES[name], results[name]
    assert result.returncode == case.code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and case.error in errors[0], result.stderr
    if not case.report_says_why:
        assert "error" not in result.stdout.lower(), result.stdout
        assert case.error not in result.stdout
