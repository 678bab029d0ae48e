"""Every wait of a run is bounded: lock waits, long statements, automatic DDL.

What is proved:

- With another session holding ``LOCK TABLE … IN ACCESS EXCLUSIVE MODE`` on the target
  in an open transaction, a run with ``lock_timeout=1`` (seconds, or a ``timedelta``)
  fails within a few seconds instead of waiting forever, on both paths. The error is an
  :class:`~ematix_flow._errors.EmatixFlowError` naming the target table, the lock, the
  blocking backend's pid and its query; the target and the watermark are untouched and
  ``ematix_flow.run_history`` records the run as ``failed``. The same bound comes from
  ``EMATIX_FLOW_LOCK_TIMEOUT`` (seconds), from ``ematix.target(…, lock_timeout=)`` and
  from ``@ematix.pipeline(…, lock_timeout=)`` (a target's own value wins).
- ``statement_timeout=`` (or ``EMATIX_FLOW_STATEMENT_TIMEOUT``) cuts a slow source query
  (``pg_sleep``) on the source session too, and the run fails cleanly, naming the
  statement timeout.
- Automatic DDL (a column added to the declared table → ``ALTER TABLE … ADD COLUMN``)
  while another transaction has read the table does not stall other readers: a third
  session's ``SELECT`` completes under a 3 s ``statement_timeout`` while the run is still
  waiting, and the run ends cleanly once the reader commits.

Every run that may block is started in a thread joined with a deadline, and every lock
the test takes is released in a ``finally``: an engine that waits forever fails these
tests instead of hanging them.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from ematix_flow import _core, ematix, pipeline
from ematix_flow._errors import EmatixFlowError
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text

pytestmark = pytest.mark.db

#: How long a run that should end within a few seconds may take before the test gives up.
JOIN_S = 12.0
#: What "within a few seconds" means for a 1 s timeout.
BOUND_S = 8.0
MARKER = "lock-test-blocker"
TARGET = "wh.dim"


class Dim(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "dim"

    id = Column(BigInt(), nullable=False, primary_key=True)
    v = Column(Text())


class DimWider(ManagedTable):
    """``wh.dim`` declared with one more column: the run adds it with ALTER TABLE."""

    __schema__ = "wh"
    __tablename__ = "dim"

    id = Column(BigInt(), nullable=False, primary_key=True)
    v = Column(Text())
    w = Column(Text())


@dataclass
class Outcome:
    result: Any = None
    error: BaseException | None = None
    elapsed: float = 0.0


class Runs:
    """Runs started in daemon threads; each is joined with a deadline."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def start(self, fn: Callable[[], Any]) -> tuple[threading.Thread, Outcome]:
        outcome = Outcome()

        def body() -> None:
            t0 = time.monotonic()
            try:
                outcome.result = fn()
            except BaseException as exc:  # handed to the test thread
                outcome.error = exc
            outcome.elapsed = time.monotonic() - t0

        thread = threading.Thread(target=body, name="ematix-run", daemon=True)
        self.threads.append(thread)
        thread.start()
        return thread, outcome

    def bounded(self, fn: Callable[[], Any], what: str, limit: float = JOIN_S) -> Outcome:
        thread, outcome = self.start(fn)
        thread.join(limit)
        if thread.is_alive():
            pytest.fail(f"{what}: the run was still waiting after {limit:.0f} s (unbounded wait)")
        return outcome


@pytest.fixture
def runs() -> Iterator[Runs]:
    made = Runs()
    yield made
    for thread in made.threads:  # the test released its locks by now
        thread.join(JOIN_S)


class Blocker:
    """A session holding ``ACCESS EXCLUSIVE`` on a table in an open transaction; its
    last query (what ``pg_stat_activity`` shows) carries :data:`MARKER`."""

    def __init__(self, url: str, table: str, mode: str = "ACCESS EXCLUSIVE") -> None:
        self.conn = psycopg.connect(url, application_name=MARKER)
        self.conn.execute(f"LOCK TABLE {table} IN {mode} MODE")
        self.conn.execute(f"SELECT '{MARKER}' AS marker")
        self.pid = self.conn.info.backend_pid

    def __enter__(self) -> Blocker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()


@dataclass
class World:
    dbs: Any
    source: _core.Connection
    warehouse: _core.Connection

    def conn(self, path: str) -> _core.Connection:
        return self.warehouse if path == "same_db" else self.source

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dbs.warehouse_url, autocommit=True) as c:
            return c.execute(query).fetchall()

    def target_rows(self) -> list[tuple[Any, ...]]:
        return self.rows("SELECT id, v FROM wh.dim ORDER BY id")

    def watermarks(self) -> list[tuple[Any, ...]]:
        return self.rows(
            "SELECT pipeline, target, column_name, value FROM ematix_flow.watermarks "
            "ORDER BY pipeline, target"
        )

    def last_history(self) -> tuple[Any, ...]:
        return self.rows(
            "SELECT target, status, error FROM ematix_flow.run_history ORDER BY id DESC LIMIT 1"
        )[0]


def sync(
    world: World, path: str = "cross_db", query: str = "SELECT id, v FROM app.s", **kw: Any
) -> dict[str, Any]:
    return pipeline.sync(
        target=kw.pop("target", Dim),
        source=Source.postgres_query(world.conn(path), query),
        target_connection=world.warehouse,
        mode="merge",
        incremental_column="id",
        force_path=path,
        **kw,
    )


@pytest.fixture
def world(dbs: Any, monkeypatch: pytest.MonkeyPatch) -> World:
    """``app.s`` (ids 1-5) in both databases; ``wh.dim`` loaded with ids 1-3 by an
    incremental merge (watermark 3); ids 4 and 5 are waiting to be loaded."""
    for key in ("EMATIX_FLOW_LOCK_TIMEOUT", "EMATIX_FLOW_STATEMENT_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    for url in (dbs.source_url, dbs.warehouse_url):
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE SCHEMA app")
            c.execute("CREATE TABLE app.s (id bigint PRIMARY KEY, v text)")
            c.execute("INSERT INTO app.s SELECT g, 'v' || g FROM generate_series(1, 3) g")
    w = World(dbs, _core.connect(dbs.source_url), _core.connect(dbs.warehouse_url))
    first = sync(w)
    assert first["status"] == "succeeded" and first["rows_inserted"] == 3, first
    for url in (dbs.source_url, dbs.warehouse_url):
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("INSERT INTO app.s VALUES (4, 'v4'), (5, 'v5')")
    return w


def assert_untouched(world: World, before_rows: Any, before_marks: Any) -> None:
    assert world.target_rows() == before_rows, "the failed run changed the target"
    assert world.watermarks() == before_marks, "the failed run moved the watermark"
    target, status, error = world.last_history()
    assert (target, status) == (TARGET, "failed"), (target, status, error)
    assert error, "the failed run's history row carries no error"


def assert_names_the_blocker(message: str, blocker: Blocker) -> None:
    assert TARGET in message, f"the error does not name the table: {message}"
    assert re.search(r"\block", message, re.I), (
        f"the error does not say it waited for a lock: {message}"
    )
    assert re.search(rf"\b{blocker.pid}\b", message), (
        f"the error does not name the blocking pid {blocker.pid}: {message}"
    )
    assert MARKER in message, f"the error does not show the blocker's query: {message}"


@pytest.mark.parametrize(
    ("path", "timeout"),
    [("cross_db", 1), ("same_db", timedelta(seconds=1)), ("cross_db", 1.5)],
    ids=["cross_db-int", "same_db-timedelta", "cross_db-float"],
)
def test_lock_timeout_bounds_the_wait_for_a_locked_target(
    world: World, runs: Runs, path: str, timeout: Any
) -> None:
    before_rows, before_marks = world.target_rows(), world.watermarks()
    with Blocker(world.dbs.warehouse_url, TARGET) as blocker:
        outcome = runs.bounded(
            lambda: sync(world, path, lock_timeout=timeout), "lock_timeout on a locked target"
        )
    assert isinstance(outcome.error, EmatixFlowError), outcome
    assert outcome.elapsed < BOUND_S, f"took {outcome.elapsed:.1f} s with a 1 s lock timeout"
    assert_names_the_blocker(str(outcome.error), blocker)
    assert_untouched(world, before_rows, before_marks)


def test_lock_timeout_from_the_environment(
    world: World, runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_LOCK_TIMEOUT", "1")
    before_rows, before_marks = world.target_rows(), world.watermarks()
    with Blocker(world.dbs.warehouse_url, TARGET) as blocker:
        outcome = runs.bounded(lambda: sync(world), "EMATIX_FLOW_LOCK_TIMEOUT=1")
    assert isinstance(outcome.error, EmatixFlowError), outcome
    assert outcome.elapsed < BOUND_S, f"took {outcome.elapsed:.1f} s with a 1 s lock timeout"
    assert_names_the_blocker(str(outcome.error), blocker)
    assert_untouched(world, before_rows, before_marks)


def _declared(world: World, monkeypatch: pytest.MonkeyPatch, names: list[str]) -> str:
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", world.dbs.warehouse_url)
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLTP", world.dbs.source_url)
    name = f"lock_timeout_{uuid.uuid4().hex[:8]}"
    names.append(name)
    return name


def test_lock_timeout_on_the_pipeline_decorator(
    world: World, runs: Runs, monkeypatch: pytest.MonkeyPatch, names: list[str]
) -> None:
    name = _declared(world, monkeypatch, names)

    @ematix.pipeline(
        target=Dim,
        mode="merge",
        source_connection="oltp",
        target_connection="warehouse",
        lock_timeout=1,
        name=name,
    )
    def declared(src: Any, tgt: Any) -> str:
        return "SELECT id, v FROM app.s"

    with Blocker(world.dbs.warehouse_url, TARGET) as blocker:
        outcome = runs.bounded(declared, "@ematix.pipeline(lock_timeout=1)")
    assert outcome.error is None, outcome
    report = outcome.result
    assert not report.ok and outcome.elapsed < BOUND_S, (report.to_dict(), outcome.elapsed)
    assert_names_the_blocker(report.results[0].error, blocker)


def test_lock_timeout_on_a_target_wins_over_the_pipeline(
    world: World, runs: Runs, monkeypatch: pytest.MonkeyPatch, names: list[str]
) -> None:
    name = _declared(world, monkeypatch, names)

    @ematix.pipeline(
        targets=[ematix.target(Dim, mode="merge", lock_timeout=timedelta(seconds=1))],
        source_connection="oltp",
        target_connection="warehouse",
        lock_timeout=600,
        name=name,
    )
    def declared(src: Any, tgt: Any) -> str:
        return "SELECT id, v FROM app.s"

    with Blocker(world.dbs.warehouse_url, TARGET) as blocker:
        outcome = runs.bounded(declared, "ematix.target(lock_timeout=1)")
    assert outcome.error is None, outcome
    report = outcome.result
    assert not report.ok and outcome.elapsed < BOUND_S, (report.to_dict(), outcome.elapsed)
    assert_names_the_blocker(report.results[0].error, blocker)


SLOW = "SELECT s.id, s.v FROM app.s AS s CROSS JOIN (SELECT pg_sleep(5)) AS z"


@pytest.mark.parametrize(
    ("path", "how"), [("cross_db", "keyword"), ("same_db", "env")], ids=["cross_db", "same_db"]
)
def test_statement_timeout_cuts_a_slow_source(
    world: World, runs: Runs, monkeypatch: pytest.MonkeyPatch, path: str, how: str
) -> None:
    before_rows, before_marks = world.target_rows(), world.watermarks()
    kw: dict[str, Any] = {}
    if how == "keyword":
        kw["statement_timeout"] = 1
    else:
        monkeypatch.setenv("EMATIX_FLOW_STATEMENT_TIMEOUT", "1")
    outcome = runs.bounded(
        lambda: sync(world, path, query=SLOW, **kw), "statement_timeout=1", limit=20
    )
    assert isinstance(outcome.error, EmatixFlowError), (
        f"a 5 s source query under a 1 s statement timeout: {outcome}"
    )
    assert outcome.elapsed < 4.5, f"took {outcome.elapsed:.1f} s with a 1 s statement timeout"
    message = str(outcome.error)
    assert re.search(r"statement[ _]timeout", message, re.I), message
    assert TARGET in message, message
    assert_untouched(world, before_rows, before_marks)


def test_automatic_ddl_does_not_stall_readers(
    world: World, runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_LOCK_TIMEOUT", "20")
    watcher = psycopg.connect(world.dbs.warehouse_url, autocommit=True)
    reader = psycopg.connect(world.dbs.warehouse_url, application_name="open-reader")
    third = psycopg.connect(world.dbs.warehouse_url, autocommit=True)
    try:
        reader.execute("SELECT count(*) FROM wh.dim")  # ACCESS SHARE, held until commit
        run, outcome = runs.start(
            lambda: sync(world, query="SELECT id, v, v AS w FROM app.s", target=DimWider)
        )

        def ddl_attempted() -> bool:
            return bool(
                watcher.execute(
                    "SELECT (SELECT count(*) FROM pg_locks WHERE relation = 'wh.dim'::regclass "
                    "AND mode = 'AccessExclusiveLock' AND NOT granted) + (SELECT count(*) "
                    "FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND query ILIKE 'ALTER TABLE%%dim%%')"
                ).fetchone()[0]
            )

        deadline = time.monotonic() + JOIN_S
        while not ddl_attempted():
            if not run.is_alive():
                pytest.fail(f"the run ended before it tried to alter the table: {outcome}")
            if time.monotonic() > deadline:
                pytest.fail("the run never tried to ALTER TABLE wh.dim")
            time.sleep(0.002)

        third.execute("SET statement_timeout = '3s'")
        for _ in range(3):
            try:
                third.execute("SELECT count(*) FROM wh.dim").fetchone()
            except psycopg.errors.QueryCanceled:
                pytest.fail("a reader waited more than 3 s behind the run's ALTER TABLE")
            time.sleep(0.2)
        assert run.is_alive(), f"the run gave up before its 20 s lock timeout: {outcome}"

        reader.commit()
        run.join(25)
        assert not run.is_alive(), "the run did not finish after the reader committed"
    finally:
        reader.close()
        third.close()
        watcher.close()

    if outcome.error is None:
        assert outcome.result["status"] == "succeeded", outcome.result
        assert world.target_rows() == [(i, f"v{i}") for i in range(1, 6)]
        assert world.rows("SELECT id, w FROM wh.dim WHERE id > 3 ORDER BY id") == [
            (4, "v4"),
            (5, "v5"),
        ]
    else:
        assert isinstance(outcome.error, EmatixFlowError), outcome
        assert re.search(r"\block", str(outcome.error), re.I), outcome.error
        assert world.target_rows() == [(i, f"v{i}") for i in range(1, 4)]
