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

        with connect("warehouse").open() as conn:  # the server's database `warehouse`
            assert conn.execute("SELECT current_database()").fetchone() == ("warehouse",)
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
            "dsn": connect("oltp").dsn.replace("/oltp?", "/postgres?"),  # the server's
        }
    finally:
        result = runner.invoke(
            app, ["dev-db", "stop", "--name", "warehouse", "--data-dir", str(datadir)]
        )
    assert result.exit_code == 0
    assert f"The PostgreSQL server in {datadir} stopped" in result.output
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
    # The same for the databases it registers by default.
    original = '[connections.warehouse]\ndsn = "postgresql://app@prod-db/dw"\n'
    config.write_text(original)
    result = runner.invoke(app, ["dev-db", "start"])
    assert result.exit_code == 3, result.output
    assert "'warehouse'" in result.output and "--database" in result.output
    assert config.read_text() == original
    assert server_processes(devdb_dir) == []


def test_bad_name_is_a_configuration_error(devdb_dir: Path) -> None:
    result = runner.invoke(app, ["dev-db", "status", "--name", "no spaces"])
    assert result.exit_code == 3
    assert "invalid connection name" in result.output
    result = runner.invoke(app, ["dev-db", "start", "--database", "no spaces"])
    assert result.exit_code == 3
    assert "invalid connection name 'no spaces'" in result.output
    assert server_processes(devdb_dir) == []


def test_readme_pipelines_run_after_dev_db_start(devdb_dir: Path) -> None:
    """`flow dev-db start`, nothing else: one server whose databases `warehouse` and
    `oltp` are the connections the README's pipelines name (by default or as their
    source), so every README example runs, the cross-database mirror included, with no
    DSN written anywhere by hand; `stop` leaves no process."""
    from test_readme import OLTP_SOURCE, README, WAREHOUSE_SOURCE, python_blocks

    from ematix_flow.config import connect

    try:
        started = flow_process("dev-db", "start")
        assert started.returncode == 0, started.stderr
        assert "warehouse (database warehouse), oltp (database oltp)" in started.stdout
        with connect("warehouse").open() as conn:  # the data a user's databases hold
            conn.execute(WAREHOUSE_SOURCE)
        with connect("oltp").open() as conn:
            conn.execute(OLTP_SOURCE)
        blocks = python_blocks(README.read_text(encoding="utf-8"))
        Path("readme_pipelines.py").write_text("\n\n".join(blocks), encoding="utf-8")
        # Importing the module runs the README's own calls (customer_sync.preview(),
        # .dry_run(), customer_sync(), sync_spend()); then the mirror from oltp runs.
        ran = flow_process("run", "sync_customers", "--module", "readme_pipelines")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "cross_db" in ran.stdout
        with connect("warehouse").open() as conn:
            assert conn.execute(
                "SELECT (SELECT count(*) FROM warehouse.customer_dim WHERE is_current),"
                " (SELECT count(*) FROM warehouse.customer),"
                " (SELECT count(*) FROM features.daily_spend)"
            ).fetchone() == (3, 2, 2)
    finally:
        stopped = flow_process("dev-db", "stop")
        assert stopped.returncode == 0, stopped.stderr
    assert postgres_processes_for(devdb_dir) == []


def test_a_malformed_project_file_is_reported_before_anything_starts(devdb_dir: Path) -> None:
    Path(".ematix-flow.toml").write_text("[connections.default\ndsn = 1\n")
    result = runner.invoke(app, ["dev-db", "start"])
    assert result.exit_code == 3
    assert "is not valid TOML" in result.output
    assert server_processes(devdb_dir) == []
