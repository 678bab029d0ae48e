"""``flow demo`` end to end: its own embedded server in the per-user directory (a fresh
``XDG_DATA_HOME`` in every test, see conftest.py), run in processes of its own exactly as the
README's first command runs it. What it prints — row counts, the SCD2 history of a
user — is checked against the warehouse afterwards, and the warehouse against the
source. Running it a second time over the first is safe, and without ``--keep`` it
leaves no server behind.
"""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import psutil
import psycopg
import pytest

from ematix_flow._embedded import server_processes, stop_embedded

pytestmark = pytest.mark.db

ROWS = 4000


def flow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ematix_flow._cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def table_rows(output: str, title: str) -> list[list[str]]:
    """The body rows of the boxed rich table printed under ``title``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(title))
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith(("┏", "┃", "┡")):
            continue
        if not line.startswith("│"):
            break
        rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


def number(text: str) -> int:
    return int(text.replace(",", ""))


def export_value(output: str, var: str) -> str:
    match = re.search(rf"export {var}='([^']+)'", output)
    assert match, f"{var} not printed"
    return match.group(1)


INSTALL = "python3 -m venv .venv && . .venv/bin/activate && pip install -e ."


def readme_demo_command() -> list[str]:
    """The ``flow`` arguments of the README's first command (install into an activated
    virtual environment, then the demo)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    first = re.search(r"```bash\n(.*?)```", readme, re.DOTALL).group(1).strip()
    install, _, command = first.rpartition(" && flow ")
    assert install == INSTALL, first
    return command.split()


def test_readme_first_command_installs_and_runs_the_demo() -> None:
    assert readme_demo_command() == ["demo"]


def test_next_steps_activate_the_environment_only_when_flow_is_not_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ematix_flow._cli.demo import _activate_line

    bin_dir = Path(sys.executable).parent
    monkeypatch.setenv("PATH", str(tmp_path))  # `.venv/bin/flow demo`, venv not active
    assert _activate_line() == f". {bin_dir / 'activate'}"
    monkeypatch.setenv("PATH", f"{tmp_path}:{bin_dir}")  # active: the lines work as they are
    assert _activate_line() is None


@pytest.fixture
def demo_home() -> Path:
    from ematix_flow._demo.orchestrate import demo_home

    home = demo_home()
    yield home
    stop_embedded(home / "pgdata")


def test_demo_prints_real_counts_and_history_then_reruns_safely(demo_home: Path) -> None:
    result = flow("demo", "--keep", "--rows", str(ROWS))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout

    # Every long step announced itself and finished.
    for step in range(1, 10):
        assert f"[{step}/9]" in out
    assert "Preview of user_purchase_features" in out
    assert (demo_home / "ematix_demo_pipelines.py").exists()
    warehouse = export_value(out, "EMATIX_FLOW_DSN_WAREHOUSE")
    oltp = export_value(out, "EMATIX_FLOW_DSN_OLTP")
    assert "flow preview user_purchase_features --module ematix_demo_pipelines" in out
    assert str(demo_home) in out

    with psycopg.connect(warehouse) as wh, psycopg.connect(oltp) as src:
        # The printed counts are the warehouse's.
        counts = table_rows(out, "Rows per target")
        assert [c[0] for c in counts] == [
            "crm.customers",
            "features.user_purchase_features_v1",
            "features.user_lifetime_value",
            "features.user_segments",
            "analytics.user_value_snapshots",
        ]
        for table, mode, rows, current in counts:
            schema, name = table.split(".")
            real = wh.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchone()[0]
            assert number(rows) == real, table
            if mode == "scd2":
                real_current = wh.execute(
                    f'SELECT count(*) FROM "{schema}"."{name}" WHERE is_current'
                ).fetchone()[0]
                assert number(current) == real_current, table
                assert real > real_current  # the second run closed versions

        # The mirror equals the changed source, deletes included.
        mirrored = wh.execute(
            "SELECT customer_id, email, country FROM crm.customers ORDER BY 1"
        ).fetchall()
        source = src.execute("SELECT id, email, country FROM app.users ORDER BY 1").fetchall()
        assert mirrored == source
        assert len(source) < ROWS // 8  # accounts were closed, and the mirror followed

        # Current feature versions equal the source's aggregates for every key.
        current = {
            (r[0], r[1]): (r[2], r[3])
            for r in wh.execute(
                "SELECT user_id, period_start, total_spend, order_count"
                " FROM features.user_purchase_features_v1 WHERE is_current"
            )
        }
        expected = {
            (r[0], r[1]): (r[2], r[3])
            for r in src.execute(
                "SELECT user_id, (event_ts AT TIME ZONE 'UTC')::date, sum(amount), count(*)"
                " FROM events.purchases GROUP BY 1, 2"
            )
        }
        assert all(current[key] == value for key, value in expected.items())

        # The printed SCD2 history is the user's real history, closed versions included.
        title = next(line for line in out.splitlines() if line.startswith("SCD2 history of user "))
        user = int(re.search(r"user (\d+)", title).group(1))
        shown = table_rows(out, title)
        assert any(row[6] == "no" for row in shown) and any(row[6] == "yes" for row in shown)
        real_rows = {
            (str(r[0]), r[1], r[2], r[3].strftime("%Y-%m-%d %H:%M:%S"))
            for r in wh.execute(
                "SELECT period_start, total_spend, order_count, valid_from"
                " FROM features.user_purchase_features_v1 WHERE user_id = %s",
                (user,),
            )
        }
        for row in shown:
            assert (row[0], Decimal(row[1]), int(row[2]), row[4]) in real_rows

        # One run-history row per target per run.
        history = dict(
            wh.execute(
                "SELECT pipeline, count(*) FROM ematix_flow.run_history"
                " WHERE status = 'succeeded' GROUP BY 1"
            ).fetchall()
        )
        assert history == {
            "customers_mirror": 2,
            "user_purchase_features": 2,
            "user_value_fanout": 6,
        }

    # The README's first command, run over the first demo (server still up): it resets
    # the databases, runs at full size, and without --keep stops the server, leaving
    # nothing of it behind.
    again = flow(*readme_demo_command())
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert "PostgreSQL stopped" in again.stdout
    full = table_rows(again.stdout, "Rows per target")
    assert [c[0] for c in full] == [c[0] for c in counts]
    assert number(full[0][2]) > number(counts[0][2])  # the default size is larger
    assert server_processes(demo_home / "pgdata") == []
    leftovers = [
        p.info["pid"]
        for p in psutil.process_iter(attrs=["pid", "cmdline"])
        if any(str(demo_home) in part for part in p.info.get("cmdline") or [])
    ]
    assert leftovers == []
