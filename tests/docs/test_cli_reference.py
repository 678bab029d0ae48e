"""docs/cli.md against the ``flow`` app: the generated reference is current, and every
option it lists shows up in that command's ``--help``."""

from __future__ import annotations

import pytest
from cli_reference import cell, commands, current, params, render
from typer.testing import CliRunner

from ematix_flow._cli.main import app


def test_reference_is_generated_from_the_current_app() -> None:
    assert current() == render(), (
        "docs/cli.md is out of date with the flow commands; regenerate it with "
        "`.venv/bin/python tests/docs/cli_reference.py --write` and review the prose"
    )


@pytest.mark.parametrize(
    "path", [" ".join(path) for path, _cmd, _ctx in commands()], ids=lambda p: p
)
def test_every_documented_option_is_in_help(path: str) -> None:
    section = current().split(f"### `{path}`\n", 1)[1].split("\n### ", 1)[0]
    command, ctx = next((c, x) for p, c, x in commands() if " ".join(p) == path)
    result = CliRunner().invoke(app, [*path.split()[1:], "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for kind, flags, _help in params(command, ctx):
        assert f"`{cell(flags)}`" in section
        if kind == "option":
            for flag in (f for f in flags.split(" ")[0:3] if f.startswith("-")):
                assert flag.rstrip(",") in result.output, (path, flag)
