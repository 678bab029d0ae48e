"""Same-DB ``scd2``: every statement of a target's plan reads one snapshot of the source.

The same-DB scd2 plan runs several statements over the inlined source query (count the
source, close changed versions, insert new versions). The source here is a query that
calls ``app.gate()`` once per statement; the gate's second call (inside the run, between
the count and the insert) waits for an advisory lock the test holds. While the run is
parked there, another session commits changes to the source: keys whose change arrived
before the run are deleted, a key is updated and deleted, another is updated, a new one
is inserted. Then the lock is released and the run finishes.

What is proved: the target ends up exactly as a run over *one* state of the source
would leave it — the state before the concurrent commit or the state after it, never a
mix — so every key of that snapshot has exactly one current version, a key that had a
current version before the run keeps one when deletes are not handled, intervals never
overlap; and the counts returned and recorded in ``ematix_flow.run_history`` are never
negative and add up to that snapshot (inserted + updated + unchanged = its rows).

No sleep is used as synchronisation: the test waits (with a deadline) until it sees the
run's backend waiting for the advisory lock, and every wait is bounded, so a broken
engine fails the test instead of hanging it.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import psycopg
import pytest

from ematix_flow import _core, pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text

pytestmark = pytest.mark.db

GATE_KEY = 730_012  # the advisory lock the gate waits for on its second call
DEADLINE_S = 20.0

QUERY = "SELECT id, v FROM app.s WHERE (SELECT app.gate())"

SETUP = (
    "CREATE SCHEMA app",
    "CREATE SEQUENCE app.gate_calls",
    "CREATE TABLE app.s (id bigint PRIMARY KEY, v text NOT NULL)",
    f"""
    CREATE FUNCTION app.gate() RETURNS boolean VOLATILE LANGUAGE plpgsql AS $$
    BEGIN
      -- sequences are not transactional: the test sees every call from outside
      IF nextval('app.gate_calls') = 2 THEN
        PERFORM pg_advisory_lock_shared({GATE_KEY});
        PERFORM pg_advisory_unlock_shared({GATE_KEY});
      END IF;
      RETURN true;
    END
    $$
    """,
)

#: The source the first run loads (all current afterwards).
INITIAL = {1: "A", 2: "A", 3: "A", 4: "A", 6: "A"}
#: Committed before the second run starts: keys 1 and 6 changed A→B.
BEFORE = {1: "B", 2: "A", 3: "A", 4: "A", 6: "B"}
#: Committed by another session while the second run is parked between its statements.
CONCURRENT = (
    "DELETE FROM app.s WHERE id IN (1, 6)",  # changed before the run, now gone
    "UPDATE app.s SET v = 'B' WHERE id = 3",  # changed A→B ...
    "DELETE FROM app.s WHERE id = 3",  # ... and deleted
    "UPDATE app.s SET v = 'B' WHERE id = 2",
    "INSERT INTO app.s VALUES (5, 'A')",
)
AFTER = {2: "B", 4: "A", 5: "A"}


class Dim(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "dim"

    id = Column(BigInt(), nullable=False, primary_key=True)
    v = Column(Text())


def _dbname(url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(url)["dbname"]


def _expected(
    prior: dict[int, str], snap: dict[int, str], deletes: bool
) -> tuple[dict[int, str], dict[str, int]]:
    """Current versions and counts of an scd2 run over ``snap`` (a model of the mode)."""
    current = dict(snap) if deletes else {**prior, **snap}
    counts = {
        "rows_inserted": sum(1 for k in snap if k not in prior),
        "rows_updated": sum(1 for k in snap if k in prior and prior[k] != snap[k]),
        "rows_unchanged": sum(1 for k in snap if k in prior and prior[k] == snap[k]),
        "rows_deleted": sum(1 for k in prior if k not in snap) if deletes else 0,
    }
    return current, counts


def _versions(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute(
            "SELECT id, v, valid_from, valid_to, is_current FROM wh.dim ORDER BY id, valid_from"
        ).fetchall()


def _check_history(versions: list[tuple[Any, ...]]) -> dict[int, str]:
    """The scd2 invariants of the stored history; returns the current version per key."""
    current: dict[int, str] = {}
    by_key: dict[int, list[tuple[Any, ...]]] = {}
    for row in versions:
        by_key.setdefault(row[0], []).append(row)
    for key, rows in by_key.items():
        live = [r for r in rows if r[4]]
        assert len(live) <= 1, f"key {key} has {len(live)} current versions: {rows}"
        for r in rows:
            assert r[4] == (r[3] is None), f"key {key}: is_current disagrees with valid_to: {r}"
        for earlier, later in itertools.pairwise(rows):
            assert earlier[3] is not None and earlier[3] <= later[2], (
                f"key {key}: versions overlap: {earlier} / {later}"
            )
        if live:
            current[key] = live[0][1]
    return current


def _history_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(
            "SELECT status, rows_inserted, rows_updated, rows_deleted, rows_unchanged "
            "FROM ematix_flow.run_history ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row is not None and row[0] == "succeeded", row
    return dict(
        zip(
            ("rows_inserted", "rows_updated", "rows_deleted", "rows_unchanged"),
            row[1:],
            strict=True,
        )
    )


def _wait(what: str, check: Any, run: threading.Thread) -> bool:
    """Poll ``check`` until it holds (True) or the run ended first (False)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if check():
            return True
        if not run.is_alive():
            return False
        time.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.parametrize("handle_deletes", [None, "hard"])
def test_scd2_statements_read_one_snapshot(dbs: Any, handle_deletes: str | None) -> None:
    url = dbs.warehouse_url
    with psycopg.connect(url, autocommit=True) as c:
        for s in SETUP:
            c.execute(s)
        for k, v in INITIAL.items():
            c.execute("INSERT INTO app.s VALUES (%s, %s)", (k, v))

    conn = _core.connect(url)

    def sync() -> dict[str, Any]:
        return pipeline.sync(
            target=Dim,
            source=Source.postgres_query(conn, QUERY),
            target_connection=conn,
            mode="scd2",
            handle_deletes=handle_deletes,
            force_path="same_db",
        )

    first = sync()  # nobody holds the gate's lock: the gate never waits
    assert first["status"] == "succeeded" and first["rows_inserted"] == len(INITIAL), first
    assert _check_history(_versions(url)) == INITIAL

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("UPDATE app.s SET v = 'B' WHERE id IN (1, 6)")
        c.execute("SELECT setval('app.gate_calls', 1, false)")  # next call is the first

    outcome: dict[str, Any] = {}

    def second_run() -> None:
        try:
            outcome["result"] = sync()
        except BaseException as exc:  # reported by the test thread
            outcome["error"] = exc

    holder = psycopg.connect(url, autocommit=True)
    watcher = psycopg.connect(url, autocommit=True)
    writer = psycopg.connect(url)
    run = threading.Thread(target=second_run, name="scd2-run", daemon=True)
    released = False
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (GATE_KEY,))
        run.start()

        def parked() -> bool:
            calls = watcher.execute(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM app.gate_calls"
            ).fetchone()[0]
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
                (_dbname(url),),
            ).fetchone()[0]
            return calls >= 2 and waiting > 0

        # A run that reads the source in one statement never parks: the concurrent
        # commit then simply lands after it, which is just as consistent.
        _wait("the run to park between its statements", parked, run)

        writer.execute("SET statement_timeout = '10s'")
        try:
            for s in CONCURRENT:
                writer.execute(s)
            writer.commit()
        except psycopg.errors.QueryCanceled:
            pytest.fail("the run blocks writers of the source while it reads it")

        holder.execute("SELECT pg_advisory_unlock(%s)", (GATE_KEY,))
        released = True
        run.join(DEADLINE_S)
        assert not run.is_alive(), "the run did not finish after the gate was released"
    finally:
        if not released:
            holder.execute("SELECT pg_advisory_unlock_all()")
        holder.close()
        writer.close()
        watcher.close()
        run.join(DEADLINE_S)

    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]
    assert result["status"] == "succeeded", result

    current = _check_history(_versions(url))
    deletes = handle_deletes is not None
    problems: list[str] = []
    if not deletes:
        lost = sorted(set(INITIAL) - set(current))
        if lost:
            problems.append(f"keys left without a current version: {lost}")

    models = {
        name: _expected(INITIAL, snap, deletes)
        for name, snap in (("before the commit", BEFORE), ("after the commit", AFTER))
    }
    matched = [name for name, (state, _) in models.items() if state == current]
    if not matched:
        problems.append(
            "the target's current versions match no single state of the source:\n"
            f"  got:                        {dict(sorted(current.items()))}\n"
            + "\n".join(
                f"  a run over the snapshot {name}: {dict(sorted(state.items()))}"
                for name, (state, _) in models.items()
            )
        )

    returned = {k: result[k] for k in models["before the commit"][1]}
    recorded = _history_counts(url)
    for where, got in (("returned", returned), ("in run_history", recorded)):
        negative = {k: v for k, v in got.items() if v < 0}
        if negative:
            problems.append(f"negative counts {where}: {got}")
        if matched:
            expected = models[matched[0]][1]
            if got != expected:
                problems.append(
                    f"counts {where} {got} do not describe the snapshot {matched[0]}: {expected}"
                )
    assert not problems, "\n".join(problems)
