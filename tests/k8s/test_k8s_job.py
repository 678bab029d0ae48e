"""`flow export-k8s --job`: a state action (backfill, full refresh, reset) as a one-off
Job in the pipeline's own pod — valid against the official schemas, with the command
asked for, the pipeline's connections and no secret value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _k8s_testing import load_all, validate_strict
from spec_examples import SECTION_2, SECTION_4_AFTER, write

pytestmark = pytest.mark.k8s

IMAGE = "registry.example/team/pipelines:1.4.0"
PASSWORD = "Sup3r-Secret-pw"
URL = f"postgresql://etl:{PASSWORD}@db.internal:5432/wh"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    write(folder, SECTION_2 + SECTION_4_AFTER, "team_pipelines")
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", URL)
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLTP", URL.replace("/wh", "/oltp"))
    monkeypatch.chdir(folder)
    return folder


def _job(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ematix_flow._cli.main",
            "export-k8s",
            "--module",
            "team_pipelines",
            "--image",
            IMAGE,
            "--namespace",
            "data",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [
        "backfill sync_user_purchase_features --from 2026-01-01 --to 2026-01-08 --step 1d",
        "run customer_sync --full-refresh --target warehouse.customer_dim",
        "state reset customer_sync --to 2026-01-01 --yes",
    ],
)
def test_a_state_action_renders_a_valid_job(project: Path, command: str) -> None:
    result = _job("--job", command)
    assert result.returncode == 0, result.stderr
    (doc,) = load_all(result.stdout)
    validate_strict(doc)
    assert doc["kind"] == "Job" and doc["metadata"]["namespace"] == "data"
    container = doc["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["flow", *command.split(), "--module", "team_pipelines"]
    assert container["image"] == IMAGE
    envs = {e["name"] for e in container["env"]}
    assert "EMATIX_FLOW_DSN_WAREHOUSE" in envs
    assert doc["spec"]["backoffLimit"] == 0
    assert PASSWORD not in result.stdout + result.stderr
    assert "db.internal" not in result.stdout


def test_a_job_for_an_unknown_pipeline_or_command_is_refused(project: Path) -> None:
    unknown = _job("--job", "backfill nope --from 1 --to 2")
    assert unknown.returncode == 2 and "names no scheduled pipeline" in unknown.stderr
    bad = _job("--job", "demo customer_sync")
    assert bad.returncode != 0 and "--job runs one of run, backfill, state" in bad.stderr
