"""The Dockerfile: multi-stage, slim, non-root, and its build context is enough.

No container engine runs here, so the image is checked by what it is made of: the
instructions, and — the step that matters — building the wheel that the build stage
installs from exactly the files the Dockerfile copies, then checking that it holds
``flow``, the operator and the Kubernetes modules.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from _k8s_testing import REPO_ROOT

pytestmark = pytest.mark.k8s

DOCKERFILE = REPO_ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_multi_stage_on_a_slim_python_base() -> None:
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        base = stage[0][1].split()[0]
        assert base.startswith("python:") and base.endswith("-slim"), base
    runtime = stages[-1]
    copies = [args for word, args in runtime if word == "COPY"]
    assert copies == ["--from=build /opt/ematix-flow /opt/ematix-flow"]


def test_runtime_runs_as_a_numeric_non_root_user() -> None:
    runtime = _stages()[-1]
    (user,) = [args for word, args in runtime if word == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert [w for w, _ in runtime].index("USER") > [w for w, _ in runtime].index("RUN")
    workdir = [args for word, args in runtime if word == "WORKDIR"]
    assert workdir == ["/app"]


def test_build_stage_installs_the_operator_extra_and_checks_both_commands() -> None:
    runs = " ".join(args for word, args in _stages()[0] if word == "RUN")
    assert 'pip install ".[operator]"' in runs
    assert "flow --help" in runs and "ematix-flow-operator --help" in runs


def _copied_sources() -> list[str]:
    sources = []
    for word, args in _stages()[0]:
        if word == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    return sources


def test_dockerignore_keeps_out_what_the_image_does_not_need() -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (".git", ".venv", "tests", "charts"):
        assert excluded in patterns
    for source in _copied_sources():
        assert not any(fnmatch.fnmatch(source, p) for p in patterns), source


def test_the_copied_files_build_a_wheel_with_flow_and_the_operator(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for source in _copied_sources():
        src = REPO_ROOT / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, context / source)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=context,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("ematix_flow-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = whl.read(entry_points).decode()
    for module in ("model", "crd", "cronjob", "summary", "export"):
        assert f"ematix_flow/_k8s/{module}.py" in names
    assert "ematix_flow_operator/cli.py" in names
    assert not any(n.startswith(("tests/", "operator/")) for n in names)
    assert "flow = ematix_flow._cli.main:main" in scripts
    assert "ematix-flow-operator = " in scripts
