"""A data directory made by an earlier release's embedded PostgreSQL 16.2 (the
``pgserver`` wheel): ``flow dev-db start`` leaves it untouched and says how to keep its
data or start over; ``status``, ``url`` and ``stop`` still work on its running server;
the demo, whose data is disposable, replaces it."""

from __future__ import annotations

import warnings
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from ematix_flow._cli.main import app
from ematix_flow._embedded import EmbeddedVersionError, server_processes, start_embedded
from ematix_flow._exitcodes import ExitCode

pytestmark = pytest.mark.db

runner = CliRunner()


@pytest.fixture
def devdb_dir() -> Path:
    """The data directory ``flow dev-db`` uses for ``default`` (under the fresh
    ``XDG_DATA_HOME`` of every demo test, whose teardown stops what runs there)."""
    from ematix_flow._cli.devdb import default_data_dir

    return default_data_dir("default").resolve()


def _listing(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in path.rglob("*")}


def _assert_refused(result: object, path: Path) -> str:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == ExitCode.CONFIG_ERROR, output  # type: ignore[attr-defined]
    assert "Traceback" not in output
    text = " ".join(output.split())  # rich wraps long lines
    assert "holds a PostgreSQL 16 database" in text
    assert "is now PostgreSQL 18" in text and "left untouched" in text
    # the two ways on: start over (the exact commands), or keep the data (where to read)
    assert f"rm -rf {path}" in text and "flow dev-db start --name default" in text
    assert "docs/cli.md" in text and "--data-dir" in text
    return text


def test_a_directory_of_another_version_is_refused_untouched(devdb_dir: Path) -> None:
    devdb_dir.mkdir(parents=True)
    (devdb_dir / "PG_VERSION").write_text("16\n")
    (devdb_dir / "base").mkdir()
    before = _listing(devdb_dir)

    _assert_refused(runner.invoke(app, ["dev-db", "start"]), devdb_dir)
    assert _listing(devdb_dir) == before
    assert server_processes(devdb_dir) == []
    assert not Path(".ematix-flow.toml").exists()  # nothing registered either


def test_a_real_16_2_directory_with_its_server_running(devdb_dir: Path) -> None:
    """What an earlier release left behind: ``flow dev-db start`` made a PostgreSQL 16.2
    data directory and left its server running."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    devdb_dir.parent.mkdir(parents=True, exist_ok=True)
    old = pgserver.get_server(devdb_dir, cleanup_mode=None)
    old_uri = old.get_uri()
    assert (devdb_dir / "PG_VERSION").read_text().strip() == "16"

    _assert_refused(runner.invoke(app, ["dev-db", "start"]), devdb_dir)
    with psycopg.connect(old_uri) as conn:  # the old server was left alone, data and all
        assert conn.execute("SHOW server_version").fetchone()[0].startswith("16.")

    status = runner.invoke(app, ["dev-db", "status"])
    assert status.exit_code == 0 and "is running" in status.output
    url = runner.invoke(app, ["dev-db", "url"])
    assert url.exit_code == 0
    with psycopg.connect(url.output.strip()) as conn:
        assert conn.execute("SHOW server_version").fetchone()[0].startswith("16.")

    stopped = runner.invoke(app, ["dev-db", "stop"])
    assert stopped.exit_code == 0 and "stopped" in stopped.output, stopped.output
    assert server_processes(devdb_dir) == []

    # Starting over as the message says gives a PostgreSQL 18 in the same place.
    import shutil

    shutil.rmtree(devdb_dir)
    started = runner.invoke(app, ["dev-db", "start"])
    assert started.exit_code == 0, started.output
    assert "PostgreSQL 18" in started.output
    assert (devdb_dir / "PG_VERSION").read_text().strip() == "18"


def test_an_explicit_data_dir_is_named_in_the_commands(tmp_path_factory: object) -> None:
    import tempfile

    datadir = Path(tempfile.mkdtemp(prefix="efold")).resolve()
    (datadir / "PG_VERSION").write_text("16\n")
    result = runner.invoke(app, ["dev-db", "start", "--name", "wh", "--data-dir", str(datadir)])
    assert result.exit_code == ExitCode.CONFIG_ERROR
    text = " ".join(result.output.split())
    assert f"flow dev-db stop --name wh --data-dir {datadir}" in text
    assert f"rm -rf {datadir}" in text
    datadir.joinpath("PG_VERSION").unlink()
    datadir.rmdir()


def test_start_embedded_refuses_or_with_replace_starts_over() -> None:
    import tempfile

    datadir = Path(tempfile.mkdtemp(prefix="efold")).resolve()
    (datadir / "PG_VERSION").write_text("16\n")
    with pytest.raises(EmbeddedVersionError) as info:
        start_embedded(datadir)
    assert (info.value.found, info.value.wanted) == ("16", "18")
    # the demo's directory is disposable: replace=True starts a new PostgreSQL 18 there
    server = start_embedded(datadir, replace=True)
    try:
        assert server.replaced == "16" and server.major == "18"
        with psycopg.connect(server.uri) as conn:
            assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("18")
    finally:
        server.stop()
        import shutil

        shutil.rmtree(datadir, ignore_errors=True)
