"""The first hour of a new user, verbatim: in a fresh HOME, the README's first command,
then the quickstart block by block, and every command `flow demo --keep` and the
quickstart print, each run by a shell as pasted, its output checked against what the
pages say it shows.

The commands are parsed from README.md and docs/quickstart.md, so a page change that
breaks the walk-through fails here. One thing is not run: creating the virtual
environment and `pip install -e .` (the README's install). The `flow` and `python` of
this test run stand in for the activated environment's, first on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_docs_blocks import DOCS, Block, blocks

from ematix_flow._embedded import server_processes, stop_embedded

pytestmark = pytest.mark.db

README = DOCS.parent / "README.md"
INSTALL = ["python3 -m venv .venv", ". .venv/bin/activate", "pip install -e ."]


class Terminal:
    """One terminal a person pastes commands into: each command runs in bash after the
    ``cd`` / ``export`` / ``.`` lines pasted before it, so it sees what they set."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd
        self.state: list[str] = []

    def run(self, line: str, *, env: dict[str, str] | None = None) -> str:
        script = "\n".join([*self.state, line])
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (
            f"`{line}` exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-3000:]}"
        )
        if line.startswith(("cd ", "export ", ". ")):
            self.state.append(line)
        return result.stdout

    def python(self, code: str) -> str:
        return self.run('python -c "$FIRST_HOUR_BLOCK"', env={"FIRST_HOUR_BLOCK": code})


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh HOME outside pytest's temporary tree (see tests/embedded_home.py); every
    embedded server started under it is stopped afterwards."""
    path = Path(tempfile.mkdtemp(prefix="efhome"))
    yield path
    for pid_file in path.glob(".local/share/ematix-flow/*/*/postmaster.pid"):
        stop_embedded(pid_file.parent)  # left running by a failed step
    shutil.rmtree(path, ignore_errors=True)


def printed_commands(out: str, after: str) -> list[str]:
    """The indented command lines the output prints after the line ending in ``after``."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith(after))
    commands = []
    for line in lines[start + 1 :]:
        if line.startswith("  "):
            commands.append(line.strip())
        elif commands or line.strip():
            break
    return commands


def expected_prints(code: str) -> list[str]:
    """The ``# (…)`` lines closing a Python block: what the page says it prints."""
    return [line[2:] for line in code.splitlines() if line.startswith("# (")]


def section(page: str, title: str) -> str:
    start = page.index(title)
    end = page.find("\n## ", start + 1)
    return page[start : end if end != -1 else None]


def test_first_hour_on_a_fresh_home(home: Path) -> None:
    readme = README.read_text(encoding="utf-8")
    quickstart_text = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    quickstart = [b for b in blocks(DOCS / "quickstart.md") if b.language in ("python", "bash")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMATIX_FLOW_", "XDG_DATA"))}
    env.update(
        HOME=str(home),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        COLUMNS="200",
        PYTHONWARNINGS="ignore",
    )
    terminal = Terminal(env, home)
    demo_data = home / ".local/share/ematix-flow/demo/pgdata"

    # README: the first command; the install steps are this test run's installation.
    first = re.search(r"```bash\n(.*?)```", readme, re.DOTALL).group(1).strip()
    steps = first.split(" && ")
    assert steps[: len(INSTALL)] == INSTALL, first
    out = terminal.run(" && ".join(steps[len(INSTALL) :]))
    assert "Rows per target" in out and "SCD2 history of user" in out
    assert server_processes(demo_data) == []  # without --keep it stops its server

    # Quickstart §1 is the README's command; §2 keeps the demo running.
    install_block, keep_block = quickstart[0], quickstart[1]
    assert install_block.code.strip() == first
    assert keep_block.code.strip() == "flow demo --keep"
    out = terminal.run(keep_block.code.strip())
    next_steps = printed_commands(out, "Connect and explore:")
    (stop_line,) = printed_commands(out, "Stop the server with:")
    assert [s.split()[0] for s in next_steps[:3]] == ["cd", "export", "export"], next_steps

    # What the demo printed, line by line.
    for line in next_steps:
        if line.startswith("psql ") and shutil.which("psql") is None:
            continue  # "# if psql is installed"
        shown = terminal.run(line)
        if line.startswith("flow list "):
            for name in ("customers_mirror", "user_purchase_features", "user_value_fanout"):
                assert name in shown
        elif line.startswith(("flow run ", "flow dry-run ")):
            assert "✓" in shown and "✗" not in shown, shown
        elif line.startswith("flow history "):
            assert shown.count("succeeded") == 2, shown  # the demo's two runs

    # Quickstart §3–§4 in the reader's own project folder, with the exports above.
    project = home / "project"
    project.mkdir()
    terminal.state.append(f"cd {project}")
    page: list[Block] = quickstart[2:]
    printed: dict[str, str] = {}
    for block in page:
        if block.directive == "illustrative":
            continue
        if block.directive == "file":
            (project / block.file_name).write_text(block.code, encoding="utf-8")
        elif block.language == "bash":
            for line in filter(None, (raw.strip() for raw in block.code.splitlines())):
                printed[line] = printed.get(line, "") + terminal.run(line)
        else:
            shown = terminal.python(block.code)
            assert shown.splitlines() == expected_prints(block.code), shown
    assert "customer_profiles" in printed["flow list --module my_pipelines"]
    would = re.search(r"would change \(`([^`]+)`", quickstart_text).group(1)
    assert would in printed["flow dry-run customer_profiles --module my_pipelines"]
    runs = printed["flow run customer_profiles --module my_pipelines"]
    assert runs.count("✓ quickstart.customer_profiles") == 2, runs
    history = printed["flow history customer_profiles --module my_pipelines"]
    assert history.count("succeeded") == 2, history  # "the history shows both runs"

    # Quickstart §5: the commands it names, then the one `flow dev-db start` prints.
    named = re.findall(r"`(flow [^`]+)`", section(quickstart_text, "## 5. Next"))
    assert named == ["flow run-due --module my_pipelines", "flow dev-db start"], named
    terminal.run(named[0])
    started = terminal.run(named[1])
    (devdb_stop,) = [
        line.split(": ", 1)[1] for line in started.splitlines() if line.startswith("stop it with:")
    ]
    terminal.run(devdb_stop)
    assert server_processes(home / ".local/share/ematix-flow/dev-db/default") == []

    # And the demo's own last line.
    terminal.run(stop_line)
    assert server_processes(demo_data) == []
