"""Helpers of the state-steering tests (``state``, ``reset_state``, full refresh,
``backfill``): the source data, a pipelines module written into the working directory,
snapshots of whole databases, the target's advisory lock held from a test, and a gate
that holds a run in the middle of its source read. (A module of its own, not conftest:
test folders each have a conftest, and ``import conftest`` is ambiguous.)

The source ``src.events`` holds twelve rows, two a day from 2024-03-01 to 2024-03-06
(00:00 and 10:00 UTC); row ``g`` is ``(g, 'v<g>', ts(g))``. Every pipeline reads the view
``src.events_v`` with ``incremental_column="ts"``, so after a first run the stored
watermark is ``2024-03-06 10:00:00+00``. The pipeline ``ev_<kind>_<path>`` writes
``wh.ev_<kind>``: ``<path>`` is ``same_db`` (the source is read where the target lives)
or ``cross_db`` (the source is the ``oltp`` connection).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from ematix_flow._cli.main import app
from ematix_flow._engine.state import LOCK_NAMESPACE, lock_key
from tests.declarative.conftest import Named

PATHS = ("same_db", "cross_db")
#: Every mode, append with a declared key (rows already loaded can be recognised).
MODES = ("merge", "scd1", "scd2", "append")
KEYED = ("merge", "scd1", "scd2")
#: The database each path reads its source from.
SOURCE_DB = {"same_db": "warehouse", "cross_db": "oltp"}

#: The watermark after a first run over the twelve source rows.
WATERMARK = "2024-03-06 10:00:00+00"
T0 = datetime(2024, 3, 1, tzinfo=UTC)
#: The single advisory-lock key of the gate (one bigint: apart from the engine's
#: two-key locks).
GATE_KEY = 0x6A7E

FLOW_BIN = str(Path(sys.executable).with_name("flow"))


def ts(g: int) -> datetime:
    """The source timestamp of row ``g`` (1-based): day ``(g-1)//2``, 00:00 or 10:00."""
    return T0 + timedelta(days=(g - 1) // 2, hours=10 * ((g - 1) % 2))


SOURCE = """
CREATE SCHEMA src;
CREATE TABLE src.events (id bigint PRIMARY KEY, val text NOT NULL, ts timestamptz NOT NULL);
INSERT INTO src.events
SELECT g, 'v' || g,
       timestamptz '2024-03-01 00:00+00' + ((g - 1) / 2) * interval '1 day'
       + ((g - 1) % 2) * interval '10 hours'
FROM generate_series(1, 12) g;
CREATE VIEW src.events_v AS SELECT id, val, ts FROM src.events;

-- The gate: while closed (the test holds the advisory lock GATE_KEY), reading a row
-- with ts >= from_ts waits. 'always' waits in any session; 'writer' only in a
-- transaction that has already written something (a refresh that began to change the
-- target). STABLE so the planner inlines the view and checks the cheap window bounds
-- first; COST makes it the last condition evaluated.
CREATE TABLE src.gate_conf (from_ts timestamptz NOT NULL, mode text NOT NULL);
INSERT INTO src.gate_conf VALUES ('-infinity', 'always');
CREATE FUNCTION src.gate(t timestamptz) RETURNS boolean LANGUAGE plpgsql STABLE COST 10000
AS $$
DECLARE
    conf src.gate_conf;
BEGIN
    SELECT * INTO conf FROM src.gate_conf;
    IF t >= conf.from_ts
       AND (conf.mode = 'always' OR pg_current_xact_id_if_assigned() IS NOT NULL) THEN
        PERFORM pg_advisory_lock_shared(GATE_KEY);
        PERFORM pg_advisory_unlock_shared(GATE_KEY);
    END IF;
    RETURN true;
END
$$;
""".replace("GATE_KEY", str(GATE_KEY))

GATED_VIEW = (
    "CREATE OR REPLACE VIEW src.events_v AS SELECT id, val, ts FROM src.events WHERE src.gate(ts)"
)

MODULE = '''
"""State-steering test pipelines: one per kind of target and path."""

from typing import Annotated

from ematix_flow import ematix, pk
from ematix_flow.types import BigInt, Text, TimestampTZ

SQL = "SELECT id, val, ts FROM src.events_v"


@ematix.table(schema="wh")
class EvMerge:
    id: Annotated[BigInt, pk()]
    val: Text
    ts: TimestampTZ


@ematix.table(schema="wh")
class EvScd1:
    id: Annotated[BigInt, pk()]
    val: Text
    ts: TimestampTZ


@ematix.table(schema="wh")
class EvScd2:
    id: Annotated[BigInt, pk()]
    val: Text
    ts: TimestampTZ


@ematix.table(schema="wh")
class EvAppend:
    id: Annotated[BigInt, pk()]
    val: Text
    ts: TimestampTZ


@ematix.table(schema="wh")
class EvAppendNokey:
    id: BigInt
    val: Text
    ts: TimestampTZ


@ematix.table(schema="wh")
class EvById:
    id: Annotated[BigInt, pk()]
    val: Text
    ts: TimestampTZ


@ematix.table(schema="wh")
class EvMultiA:
    id: Annotated[BigInt, pk()]
    val: Text
    ts: TimestampTZ


@ematix.table(schema="wh")
class EvMultiB:
    id: Annotated[BigInt, pk()]
    val: Text
    ts: TimestampTZ


def _declare(kind, path, **options):
    name = f"ev_{kind}_{path}"
    if path == "same_db":

        def one(conn):
            return SQL

        return ematix.pipeline(name=name, **options)(one)

    def two(src_conn, tgt_conn):
        return SQL

    return ematix.pipeline(name=name, source_connection="oltp", **options)(two)


TABLES = {
    "merge": ("merge", EvMerge),
    "scd1": ("scd1", EvScd1),
    "scd2": ("scd2", EvScd2),
    "append": ("append", EvAppend),
    "append_nokey": ("append", EvAppendNokey),
}
PIPES = {}
for _path in ("same_db", "cross_db"):
    for _kind, (_mode, _table) in TABLES.items():
        PIPES[_kind, _path] = _declare(
            _kind, _path, target=_table, mode=_mode, incremental_column="ts"
        )
    PIPES["by_id", _path] = _declare(
        "by_id", _path, target=EvById, mode="merge", incremental_column="id"
    )
    PIPES["multi", _path] = _declare(
        "multi",
        _path,
        targets=[ematix.target(EvMultiA, mode="merge"), ematix.target(EvMultiB, mode="scd1")],
        incremental_column="ts",
    )
'''


def name(kind: str, path: str) -> str:
    """The pipeline of ``kind`` (a mode, ``append_nokey``, ``by_id``, ``multi``) on ``path``."""
    return f"ev_{kind}_{path}"


def table(kind: str) -> str:
    """The target ``wh.ev_<kind>`` of a single-target pipeline."""
    return f"wh.ev_{kind}"


class StateProject(Named):
    """The test databases as connections ``warehouse`` and ``oltp`` (:class:`Named`'s
    SQL helpers), the source on either path, the pipelines module, and read-outs of
    targets, watermarks, history and whole databases."""

    module_name: str = ""

    def setup(self, path: str) -> str:
        """Create the source where ``path`` reads it; returns that connection's name."""
        which = SOURCE_DB[path]
        self.sql(which, SOURCE)
        return which

    def src(self, path: str, *statements: str) -> None:
        """Run statements in the source database of ``path``."""
        self.sql(SOURCE_DB[path], *statements)

    def load(self) -> ModuleType:
        """Write the pipelines module into the working directory and import it."""
        self.module_name = f"st_pipes_{uuid.uuid4().hex[:8]}"
        Path(f"{self.module_name}.py").write_text(MODULE, encoding="utf-8")
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        return importlib.import_module(self.module_name)

    # -- read-outs ------------------------------------------------------------------

    def q(self, which: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.urls[which], autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def target_rows(self, kind: str) -> list[tuple[Any, ...]]:
        """``(id, val, ts)`` of every row (every version, for scd2), sorted."""
        return self.rows("warehouse", f"SELECT id, val, ts FROM {table(kind)} ORDER BY id, val, ts")

    def current(self, kind: str, mode: str | None = None) -> list[tuple[Any, ...]]:
        """``(id, val, ts)`` the target holds now: the current versions for scd2."""
        where = " WHERE is_current" if (mode or kind) == "scd2" else ""
        return self.rows(
            "warehouse", f"SELECT id, val, ts FROM {table(kind)}{where} ORDER BY id, val, ts"
        )

    def source_rows(self, path: str) -> list[tuple[Any, ...]]:
        return self.rows(SOURCE_DB[path], "SELECT id, val, ts FROM src.events ORDER BY id")

    def versions(self, kind: str = "scd2") -> dict[int, int]:
        """Versions per key of an scd2 target."""
        return dict(self.rows("warehouse", f"SELECT id, count(*) FROM {table(kind)} GROUP BY id"))

    def watermark(self, pipeline: str, target: str | None = None) -> str | None:
        rows = self.q(
            "warehouse",
            "SELECT value FROM ematix_flow.watermarks WHERE pipeline = %s "
            "AND (%s::text IS NULL OR target = %s)",
            (pipeline, target, target),
        )
        assert len(rows) <= 1, rows
        return rows[0][0] if rows else None

    def actions(self, pipeline: str) -> list[tuple[str, str]]:
        """``(action, status)`` of the pipeline's run_history rows, oldest first."""
        if not self.exists("warehouse", "ematix_flow.run_history"):
            return []
        return self.q(
            "warehouse",
            "SELECT coalesce(action, 'run'), status FROM ematix_flow.run_history "
            "WHERE pipeline = %s ORDER BY id",
            (pipeline,),
        )

    def snapshot(self, *, sequences: bool = True) -> dict[str, Any]:
        """Both databases: catalog, every row, and (unless ``sequences=False``, for a
        rolled-back run that draws ids) where each sequence stands."""
        return {w: db_snapshot(url, sequences=sequences) for w, url in self.urls.items()}


def db_snapshot(url: str, *, sequences: bool = True) -> dict[str, Any]:
    """Every relation of the user schemas (name, kind), the columns, every row of every
    table as text (sorted), and the sequences' positions."""
    user = (
        "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%' "
        "AND n.nspname NOT LIKE 'pg_temp%%'"
    )
    out: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        out["relations"] = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n "
            f"ON n.oid = c.relnamespace WHERE {user} ORDER BY 1, 2"
        ).fetchall()
        out["columns"] = conn.execute(
            "SELECT table_schema, table_name, column_name, data_type, is_nullable "
            "FROM information_schema.columns WHERE table_schema NOT IN "
            "('pg_catalog', 'information_schema') ORDER BY 1, 2, ordinal_position"
        ).fetchall()
        for schema, rel, kind in out["relations"]:
            ident = sql.Identifier(schema, rel)
            if kind == "r":
                rows = conn.execute(sql.SQL("SELECT t::text FROM {} AS t").format(ident)).fetchall()
                out[f"{schema}.{rel}"] = sorted(r[0] for r in rows)
            elif kind == "S" and sequences:
                out[f"{schema}.{rel}"] = conn.execute(
                    sql.SQL("SELECT last_value, is_called FROM {}").format(ident)
                ).fetchall()
    return out


# -- the target's advisory lock and the gate ----------------------------------------------


@contextlib.contextmanager
def holding_target_lock(url: str, pipeline: str, target: str) -> Iterator[psycopg.Connection]:
    """Hold the advisory lock a run of ``pipeline`` takes on ``target`` (as another run
    would) for the duration of the block."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_advisory_lock(%s, hashtext(%s))",
            (LOCK_NAMESPACE, lock_key(pipeline, target)),
        )
        try:
            yield conn
        finally:
            conn.execute(
                "SELECT pg_advisory_unlock(%s, hashtext(%s))",
                (LOCK_NAMESPACE, lock_key(pipeline, target)),
            )


class Gate:
    """The gate of a source database: :meth:`close` makes readers of rows with
    ``ts >= from_ts`` wait until :meth:`open`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.holder = psycopg.connect(url, autocommit=True)
        self.watcher = psycopg.connect(url, autocommit=True)
        self.closed = False

    def close(self, from_ts: str = "-infinity", mode: str = "always") -> None:
        self.holder.execute("UPDATE src.gate_conf SET from_ts = %s, mode = %s", (from_ts, mode))
        self.holder.execute(GATED_VIEW)
        self.holder.execute("SELECT pg_advisory_lock(%s)", (GATE_KEY,))
        self.closed = True

    def open(self) -> None:
        if self.closed:
            self.holder.execute("SELECT pg_advisory_unlock(%s)", (GATE_KEY,))
            self.closed = False

    def waiting(self) -> int:
        """Sessions of this database waiting at the gate."""
        return int(
            self.watcher.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND NOT l.granted "
                "AND d.datname = current_database() AND l.objsubid = 1 AND l.objid = %s",
                (GATE_KEY,),
            ).fetchone()[0]
        )

    def pids(self) -> set[int]:
        return {self.holder.info.backend_pid, self.watcher.info.backend_pid}

    def shut(self) -> None:
        self.open()
        self.holder.close()
        self.watcher.close()


@contextlib.contextmanager
def gate(url: str) -> Iterator[Gate]:
    g = Gate(url)
    try:
        yield g
    finally:
        g.shut()


def wait_until(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float = 60,
    alive: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds, or
    as soon as ``alive()`` returns a reason the awaited work can no longer happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None:
            reason = alive()
            if reason:
                pytest.fail(f"while waiting for {what}: {reason}")
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def other_sessions(server_url: str, databases: list[str], mine: set[int]) -> int:
    """Client sessions in ``databases`` that are not the test's own."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        return int(
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s) "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND NOT pid = ANY(%s)",
                (databases, list(mine)),
            ).fetchone()[0]
        )


def dbname(url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(url)["dbname"]


# -- results as data, the CLI -------------------------------------------------------------


def as_data(value: Any) -> Any:
    """A result as plain data: ``to_dict()`` of an object, lists of them, as-is data."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [as_data(v) for v in value]
    return value


def outcome_text(value: Any) -> str:
    """Everything a result says, as one string (JSON of its data, plus any errors)."""
    parts = [json.dumps(as_data(value), default=str, sort_keys=True)]
    for attr in ("error",):
        if getattr(value, attr, None):
            parts.append(str(getattr(value, attr)))
    for r in getattr(value, "results", None) or ():
        if getattr(r, "error", None):
            parts.append(str(r.error))
    return "\n".join(parts)


def not_ok(value: Any) -> bool:
    """A returned result that says it did not succeed (``ok`` false, or a failed or
    skipped entry)."""
    if getattr(value, "ok", None) is False:
        return True
    data = as_data(value)
    items = data if isinstance(data, list) else [data]
    for item in items:
        if isinstance(item, dict) and (
            item.get("ok") is False or item.get("status") in ("failed", "skipped")
        ):
            return True
    return False


def flow(*args: str) -> Any:
    """``flow ARGS`` in-process (stdin and stdout are not terminals)."""
    return CliRunner().invoke(app, list(args))


def flow_process(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``flow ARGS`` as a real process from the working directory."""
    return subprocess.run(
        [FLOW_BIN, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=os.getcwd(),
        timeout=timeout,
        check=False,
    )
