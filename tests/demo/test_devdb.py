"""``flow dev-db``: a real embedded server started by a real ``flow`` process, left
running after it exits, registered in ./.ematix-flow.toml, and stopped with no process
left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import psycopg
import pytest
from typer.testing import CliRunner

from ematix_flow._cli.main import app
from ematix_flow._embedded import server_processes, stop_embedded

pytestmark = pytest.mark.db

runner = CliRunner()


def flow_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``flow ARGS`` in a process of its own (the server must outlive it)."""
    return subprocess.run(
        [sys.executable, "-m", "ematix_flow._cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def postgres_processes_for(datadir: Path) -> list[int]:
    """Every process on the machine whose command line names ``datadir``."""
    found = []
    for proc in psutil.process_iter(attrs=["pid", "cmdline"]):
        if any(str(datadir) in part for part in proc.info.get("cmdline") or []):
            found.append(proc.info["pid"])
    return found


@pytest.fixture
def devdb_dir() -> Path:
    """The per-user data directory ``flow dev-db`` uses for ``default`` (under a fresh
    ``XDG_DATA_HOME`` in every test); stopped again whatever the test did."""
    from ematix_flow._cli.devdb import default_data_dir

    path = default_data_dir("default").resolve()
    yield path
    stop_embedded(path)


def test_start_registers_and_survives_the_process_then_stop_leaves_nothing(
    devdb_dir: Path,
) -> None:
    config = Path(".ematix-flow.toml")
    config.write_text(
        '# my project\n[connections.reporting]\ndsn = "postgresql://r@reports/db"  # keep\n'
    )

    started = flow_process("dev-db", "start")
    assert started.returncode == 0, started.stderr
    assert str(devdb_dir) in started.stdout

    # The `flow` process has exited; its server has not.
    assert server_processes(devdb_dir)
    status = runner.invoke(app, ["dev-db", "status"])
    assert status.exit_code == 0 and "is running" in status.output

    url = runner.invoke(app, ["dev-db", "url"])
    assert url.exit_code == 0
    dsn = url.output.strip()
    assert f"host={devdb_dir}" in dsn

    text = config.read_text()
    assert "# my project" in text and "# keep" in text and "reports/db" in text
    from ematix_flow.config import connect

    resolved = connect("default")
    assert resolved.origin == "./.ematix-flow.toml"
    with resolved.open() as conn:
        assert (
            conn.execute("SELECT current_setting('server_version_num')::int").fetchone()[0]
            >= 180000
        )

    # Idempotent: a second start finds the same server and leaves one entry.
    again = flow_process("dev-db", "start")
    assert again.returncode == 0, again.stderr
    assert config.read_text().count("[connections.default]") == 1
    assert runner.invoke(app, ["dev-db", "url"]).output.strip() == dsn

    stopped = runner.invoke(app, ["dev-db", "stop"])
    assert stopped.exit_code == 0, stopped.output
    assert "stopped" in stopped.output
    assert postgres_processes_for(devdb_dir) == []
    assert server_processes(devdb_dir) == []
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=3)

    down = runner.invoke(app, ["dev-db", "status"])
    assert down.exit_code == 1 and "not running" in down.output
    assert runner.invoke(app, ["dev-db", "url"]).exit_code == 1
    # Stopping a stopped server is fine too.
    assert runner.invoke(app, ["dev-db", "stop"]).exit_code == 0


def test_named_dev_db_with_its_own_data_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    import tempfile

    datadir = Path(tempfile.mkdtemp(prefix="efdev")).resolve()
    try:
        result = runner.invoke(
            app, ["dev-db", "start", "--name", "warehouse", "--data-dir", str(datadir)]
        )
        assert result.exit_code == 0, result.output
        from ematix_flow.config import connect

        with connect("warehouse").open() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert "[connections.default]" not in Path(".ematix-flow.toml").read_text()
        status = runner.invoke(
            app,
            ["dev-db", "status", "--name", "warehouse", "--data-dir", str(datadir), "-f", "json"],
        )
        assert status.exit_code == 0
        assert json.loads(status.output) == {
            "name": "warehouse",
            "running": True,
            "data_dir": str(datadir),
            "dsn": connect("warehouse").dsn,
        }
    finally:
        result = runner.invoke(
            app, ["dev-db", "stop", "--name", "warehouse", "--data-dir", str(datadir)]
        )
    assert result.exit_code == 0
    assert postgres_processes_for(datadir) == []


def test_an_existing_connection_of_the_user_is_not_overwritten(devdb_dir: Path) -> None:
    config = Path(".ematix-flow.toml")
    original = '[connections.default]\ndsn = "postgresql://app@prod-db/app"\n'
    config.write_text(original)
    result = runner.invoke(app, ["dev-db", "start"])
    assert result.exit_code == 3, result.output
    assert "already points at another database" in result.output
    assert "--name" in result.output
    assert config.read_text() == original


def test_bad_name_is_a_configuration_error() -> None:
    result = runner.invoke(app, ["dev-db", "status", "--name", "no spaces"])
    assert result.exit_code == 3
    assert "invalid connection name" in result.output


def test_flow_run_against_dev_dbs_named_default_and_warehouse(devdb_dir: Path) -> None:
    """The issue's promise: `flow dev-db start` (twice, two names), then `flow run` of a
    pipeline whose connections are `default` and `warehouse` works with no DSN written
    anywhere by hand; `stop` leaves no process."""
    from ematix_flow._cli.devdb import default_data_dir

    warehouse_dir = default_data_dir("warehouse").resolve()
    try:
        for name in ("default", "warehouse"):
            started = flow_process("dev-db", "start", "--name", name)
            assert started.returncode == 0, started.stderr
        from ematix_flow.config import connect

        with connect("default").open() as conn:
            conn.execute(
                "CREATE SCHEMA app; CREATE TABLE app.users (id bigint PRIMARY KEY, email text);"
                "INSERT INTO app.users SELECT i, 'u' || i || '@example.com'"
                " FROM generate_series(1, 500) AS i"
            )
        Path("devdb_pipelines.py").write_text(
            "from typing import Annotated\n"
            "from ematix_flow import ematix, pk\n"
            "from ematix_flow.types import BigInt, Text\n\n\n"
            '@ematix.table(schema="crm", name="users")\n'
            "class User:\n"
            "    id: Annotated[BigInt, pk()]\n"
            "    email: Text\n\n\n"
            "@ematix.pipeline(\n"
            '    target=User, source_table="app.users", mode="merge",\n'
            '    source_connection="default", target_connection="warehouse",\n'
            ")\n"
            "def users_to_warehouse():\n"
            "    pass\n"
        )
        ran = flow_process("run", "users_to_warehouse", "--module", "devdb_pipelines")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "cross_db" in ran.stdout
        with connect("warehouse").open() as conn:
            assert conn.execute("SELECT count(*) FROM crm.users").fetchone() == (500,)
    finally:
        for name in ("default", "warehouse"):
            stopped = flow_process("dev-db", "stop", "--name", name)
            assert stopped.returncode == 0, stopped.stderr
    assert postgres_processes_for(devdb_dir) == []
    assert postgres_processes_for(warehouse_dir) == []


def test_a_malformed_project_file_is_reported_before_anything_starts(devdb_dir: Path) -> None:
    Path(".ematix-flow.toml").write_text("[connections.default\ndsn = 1\n")
    result = runner.invoke(app, ["dev-db", "start"])
    assert result.exit_code == 3
    assert "is not valid TOML" in result.output
    assert server_processes(devdb_dir) == []
