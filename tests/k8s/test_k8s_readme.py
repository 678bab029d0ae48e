"""The README's "Run on Kubernetes" section says what the artifacts really do."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from _helm import run_helm
from _k8s_testing import REPO_ROOT, load_all, validate_strict
from typer.testing import CliRunner

from ematix_flow._cli.main import app

pytestmark = pytest.mark.k8s


def _section() -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Run on Kubernetes")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _commands(section: str) -> list[list[str]]:
    """Every shell command of the section's ```bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip():
                commands.append(shlex.split(line))
    return commands


def test_section_walks_through_every_step() -> None:
    section = _section()
    words = [" ".join(c[:2]) for c in _commands(section)]
    for step in ("helm install", "flow export-k8s", "kubectl apply", "kubectl -n"):
        assert step in words, step
    assert "get emtxpipelines" in section
    assert "create secret generic ematix-flow-warehouse" in section
    assert re.search(r"```dockerfile\nFROM .*ematix-flow.*\nCOPY my_pipelines.py /app/", section)


def test_export_options_in_the_readme_exist() -> None:
    (export,) = [c for c in _commands(_section()) if c[:2] == ["flow", "export-k8s"]]
    help_text = CliRunner().invoke(app, ["export-k8s", "--help"], env={"COLUMNS": "200"}).output
    for option in (w for w in export if w.startswith("--")):
        assert option in help_text, option


def test_helm_install_in_the_readme_renders_valid_objects(helm: Path) -> None:
    (install,) = [c for c in _commands(_section()) if c[:2] == ["helm", "install"]]
    release, chart, *options = install[2:]
    assert (REPO_ROOT / chart / "Chart.yaml").exists()
    options = [o for o in options if o != "--create-namespace"]
    result = run_helm(helm, "template", release, str(REPO_ROOT / chart), *options)
    assert result.returncode == 0, result.stderr
    docs = load_all(result.stdout)
    for doc in docs:
        validate_strict(doc)
    assert {d["kind"] for d in docs} >= {"Deployment", "Role", "CustomResourceDefinition"}
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # The operator runs from the image built in step 1.
    assert container["image"].startswith("registry.example/ematix-flow:")


def test_kubernetes_md_installs_the_chart_as_the_readme_does() -> None:
    """docs/kubernetes.md's short version keeps the image flags of the README's step 2."""
    page = (REPO_ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    (readme,) = [c for c in _commands(_section()) if c[:2] == ["helm", "install"]]
    (docs,) = [c for c in _commands(page) if c[:2] == ["helm", "install"]]
    assert docs == readme
