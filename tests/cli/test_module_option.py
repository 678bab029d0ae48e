"""``--module``: an import name or a file path, and import errors that point at the
user's code, seen through the real ``flow`` process (``flow list`` needs no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ematix_flow._exitcodes import ExitCode
from tests.cli.test_main import run_flows

PIPELINE = """\
from ematix_flow import pipeline


@pipeline.register(name="{name}", schedule="0 * * * *")
def {name}():
    pass
"""
HINT = "Run flow from the folder holding"


@pytest.fixture
def project() -> Path:
    """The working directory (fresh per test): pipelines as a top-level file, in a
    plain folder and in a package, plus modules that fail to import in each way."""
    here = Path.cwd()
    files = {
        "pipes.py": PIPELINE.format(name="top"),
        "deploy/pipes_in_folder.py": PIPELINE.format(name="in_folder"),
        "etl/__init__.py": "",
        "etl/pipes_in_package.py": PIPELINE.format(name="in_package"),
        "broken_syntax.py": "from ematix_flow import pipeline\nx = (\n",
        "uses_helper.py": "import broken_helper\n",
        "broken_helper.py": "def f():\n    return undefined_name\n\n\nf()\n",
        "needs_dep.py": "import os\nimport no_such_dependency_4e1\n",
        "bad_definition.py": PIPELINE.format(name="bad").replace('"0 * * * *"', '"hourly"'),
    }
    for name, text in files.items():
        (here / name).parent.mkdir(exist_ok=True)
        (here / name).write_text(text)
    return here


def test_a_module_is_an_import_name_or_a_file_path(project: Path) -> None:
    specs = ["pipes.py", "./pipes.py", "deploy/pipes_in_folder.py", "etl/pipes_in_package.py"]
    results = run_flows(*(("list", "--module", spec) for spec in specs))
    for spec, result in zip(specs, results, strict=True):
        assert result.returncode == 0, (spec, result.stderr)
        assert result.stderr == "", spec
    names = [r.stdout.split("\n")[1].split()[0] for r in results]
    assert names == ["top", "top", "in_folder", "in_package"]


# (--module, what the error says); the hint only for a module that is not found
IMPORT_ERRORS = [
    ("nowhere", "cannot import module 'nowhere': no module named 'nowhere' (looked in"),
    # a wrong file name: never "nowhere.py.py"
    ("nowhere.py", "--module 'nowhere.py': there is no file"),
    # errors in the user's code: file and line
    ("broken_syntax", "cannot import module 'broken_syntax': broken_syntax.py:2: SyntaxError"),
    (
        "uses_helper",
        "cannot import module 'uses_helper': broken_helper.py:2: NameError: name "
        "'undefined_name' is not defined",
    ),
    (
        "needs_dep",
        "cannot import module 'needs_dep': needs_dep.py:2: module 'needs_dep' imports "
        "'no_such_dependency_4e1', which is not installed",
    ),
    (
        "bad_definition",
        "cannot import module 'bad_definition': bad_definition.py:4: pipeline bad: "
        "schedule 'hourly' is not a valid cron expression",
    ),
    ("my-pipes", "--module 'my-pipes' is not a Python module name"),
]


def test_import_errors_name_the_cause(project: Path) -> None:
    results = run_flows(*(("list", "--module", spec) for spec, _ in IMPORT_ERRORS))
    for (spec, message), result in zip(IMPORT_ERRORS, results, strict=True):
        seen = f"--module {spec}: {result.stderr}"
        assert result.returncode == ExitCode.CONFIG_ERROR, seen
        assert result.stdout == "", seen
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, seen
        assert message in result.stderr, seen
        assert (HINT in result.stderr) == (spec == "nowhere"), seen
        assert ".py.py" not in result.stderr and "Traceback" not in result.stderr, seen
