"""Every ```python and ```bash block in docs/*.md runs, in page order, against real
databases — or is marked ``<!-- illustrative -->`` on the line before it and is then
only checked for syntax (Python compiled, bash parsed with ``bash -n``).

Each page runs in a process of its own (its pipelines register in a fresh registry), in
an empty working directory, with the demo's source tables (``app.users``,
``events.purchases``) in both test databases and these connections set::

    EMATIX_FLOW_DSN_OLTP       the source database
    EMATIX_FLOW_DSN_WAREHOUSE  the warehouse database
    EMATIX_FLOW_DSN            the warehouse database (the connection "default")

A block preceded by ``<!-- file: NAME -->`` is written to NAME instead of run, so a page
can show a module and then the ``flow … --module`` commands that use it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
RUNNER = Path(__file__).with_name("run_blocks.py")
LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*(illustrative|file:\s*(\S+))\s*-->$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    language: str  # "python" | "bash" | anything else (not run)
    code: str
    directive: str | None  # None | "illustrative" | "file"
    file_name: str | None


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown page with the directive on the line before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        directive = DIRECTIVE.match(prev)
        found.append(
            Block(
                page=path.name,
                line=start + 1,
                language=LANGUAGES.get(match.group(1).lower(), match.group(1).lower()),
                code="\n".join(lines[start + 1 : j]) + "\n",
                directive=None
                if directive is None
                else ("file" if directive.group(2) else "illustrative"),
                file_name=directive.group(2) if directive else None,
            )
        )
        i = j + 1
    return found


PAGES = sorted(DOCS.glob("*.md"))


def test_the_docs_have_pages_and_runnable_blocks() -> None:
    names = {p.name for p in PAGES}
    for expected in (
        "quickstart.md",
        "concepts.md",
        "decorators.md",
        "cli.md",
        "configuration.md",
        "kubernetes.md",
        "coming-from-dlt.md",
        "coming-from-dbt-snapshots.md",
    ):
        assert expected in names
    runnable = [
        b
        for p in PAGES
        for b in blocks(p)
        if b.language in ("python", "bash") and b.directive != "illustrative"
    ]
    assert len(runnable) >= 20  # the docs teach by running examples, not by prose alone


def test_the_index_links_every_page() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in PAGES:
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not link {page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_illustrative_blocks_are_at_least_valid(page: Path) -> None:
    for block in blocks(page):
        if block.directive != "illustrative":
            continue
        where = f"{block.page}:{block.line}"
        if block.language == "python":
            compile(block.code, where, "exec")
        elif block.language == "bash":
            checked = subprocess.run(
                ["bash", "-n"], input=block.code, text=True, capture_output=True
            )
            assert checked.returncode == 0, f"{where}: {checked.stderr}"


def _seed(url: str) -> None:
    from ematix_flow._demo.data import generate_source

    generate_source(url, rows=400)


@pytest.mark.db
@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if any(b.language in ("python", "bash") for b in blocks(p))],
    ids=lambda p: p.name,
)
def test_page_blocks_run(page: Path, dbs, tmp_path: Path) -> None:
    steps = []
    for block in blocks(page):
        if block.language not in ("python", "bash") or block.directive == "illustrative":
            continue
        kind = "file" if block.directive == "file" else block.language
        steps.append(
            {
                "page": f"docs/{block.page}",
                "line": block.line,
                "kind": kind,
                "code": block.code,
                "name": block.file_name,
            }
        )
    if not steps:
        return  # every block of this page is illustrative (and was checked above)
    _seed(dbs.source_url)
    _seed(dbs.warehouse_url)
    work = tmp_path / "work"
    work.mkdir()
    steps_file = tmp_path / "steps.json"
    steps_file.write_text(json.dumps(steps), encoding="utf-8")
    env = dict(os.environ)
    env.update(
        EMATIX_FLOW_DSN_OLTP=dbs.source_url,
        EMATIX_FLOW_DSN_WAREHOUSE=dbs.warehouse_url,
        EMATIX_FLOW_DSN=dbs.warehouse_url,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONWARNINGS="ignore",
    )
    # A page that starts `flow dev-db` servers leaves them to the xdg_data_home
    # fixture (conftest.py), which stops them whatever happened here.
    result = subprocess.run(
        [sys.executable, str(RUNNER), str(steps_file)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
