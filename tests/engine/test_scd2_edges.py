"""scd2 at its edges, on both paths: keys that come back, valid_from values in the
future, rows already older than ``ttl``, and expiries that are counted.

What is proved:

- A key whose current version was closed because it left the source
  (``handle_deletes="soft"`` or ``"hard"``) gets a current version again when it
  returns, with the same values or changed ones, in every combination of ``ttl``
  (``None`` / set) and ``event_timestamp_column`` (``None`` / set, the returning row's
  event time equal to, earlier than or later than the closed version's).
- Versions of a key never overlap (``[valid_from, valid_to)``, the current one open),
  whatever the stored ``valid_from``: after a version that starts in the future (an event
  time ahead of the clock), a change synced without an event time, or with a NULL event
  time, does not start inside the old version's interval.
- With ``ttl``, a source row whose event time is already older than ``ttl`` is inserted
  in the same run as not current (``valid_to = valid_from + ttl``) and is not inserted
  again by the next run; expiries (rows inserted already expired, current versions closed
  by ``ttl``) are counted: ``rows_expired`` in the dict ``pipeline.sync`` returns and in
  ``ematix_flow.run_history``.
"""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from ematix_flow import _core, pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text, TimestampTZ

pytestmark = pytest.mark.db

PATHS = ("same_db", "cross_db")
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

Row = tuple[str | None, datetime | None]  # (v, ts)


def _table_class(name: str) -> type[ManagedTable]:
    attrs: dict[str, Any] = {
        "__schema__": "wh",
        "__tablename__": name,
        "k": Column(BigInt(), nullable=False, primary_key=True),
        "v": Column(Text()),
        "ts": Column(TimestampTZ()),
    }
    return type("Feature", (ManagedTable,), attrs)


class Case:
    """One source table (``k, v, ts``) and one scd2 target, on the given path."""

    def __init__(self, dbs: Any, path: str) -> None:
        tag = uuid.uuid4().hex[:10]
        self.dbs = dbs
        self.path = path
        self.source_db = "source" if path == "cross_db" else "warehouse"
        self.source_url = dbs.source_url if path == "cross_db" else dbs.warehouse_url
        self.source_table = f"src.feed_{tag}"
        self.target = _table_class(f"feature_{tag}")
        self.qualified = f"wh.{self.target.__tablename__}"
        with dbs.connect(self.source_db) as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS src")
            conn.execute(
                f"CREATE TABLE {self.source_table} (k bigint PRIMARY KEY, v text, ts timestamptz)"
            )

    def now(self) -> datetime:
        """The warehouse server's clock (the one ``now()`` in the engine's SQL reads)."""
        with self.dbs.connect("warehouse") as conn:
            row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        return row[0]

    def load(self, rows: dict[int, Row]) -> None:
        """Replace the source with this full snapshot."""
        with self.dbs.connect(self.source_db) as conn, conn.transaction():
            conn.execute(f"DELETE FROM {self.source_table}")
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {self.source_table} (k, v, ts) VALUES (%s, %s, %s)",
                    [(k, *row) for k, row in rows.items()],
                )

    def sync(self, **options: Any) -> dict[str, Any]:
        result = pipeline.sync(
            target=self.target,
            source=Source.postgres_query(
                _core.connect(self.source_url), f"SELECT k, v, ts FROM {self.source_table}"
            ),
            target_connection=_core.connect(self.dbs.warehouse_url),
            mode="scd2",
            force_path=self.path,
            **options,
        )
        assert result["status"] == "succeeded" and result["path"] == self.path, result
        return result

    def versions(self) -> list[dict[str, Any]]:
        """Every version, ordered by key then valid_from."""
        with self.dbs.connect("warehouse", row_factory=dict_row) as conn:
            return conn.execute(
                f"SELECT k, v, ts, valid_from, valid_to, is_current FROM {self.qualified} "
                "ORDER BY k, valid_from"
            ).fetchall()

    def history(self) -> list[dict[str, Any]]:
        with self.dbs.connect("warehouse", row_factory=dict_row) as conn:
            return conn.execute(
                "SELECT rows_inserted, rows_updated, rows_deleted, rows_unchanged, rows_expired "
                "FROM ematix_flow.run_history WHERE target = %s AND status = 'succeeded' "
                "ORDER BY id",
                (self.qualified,),
            ).fetchall()


def by_key(rows: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["k"], []).append(r)
    return out


def history_problems(rows: list[dict[str, Any]]) -> list[str]:
    """The ways the versions break the scd2 invariants (empty when they hold): at most one
    current version per key, the latest one and open; closed versions closed; half-open
    intervals that never overlap."""
    problems = []
    for k, versions in by_key(rows).items():
        current = [r for r in versions if r["is_current"]]
        if len(current) > 1:
            problems.append(f"key {k}: {len(current)} current versions")
        if current and (current[0] is not versions[-1] or current[0]["valid_to"] is not None):
            problems.append(f"key {k}: its current version is not the latest open one")
        for r in versions:
            if not r["is_current"] and (r["valid_to"] is None or r["valid_to"] < r["valid_from"]):
                problems.append(f"key {k}: closed version with interval {_interval(r)}")
        for a, b in itertools.pairwise(versions):
            if a["valid_to"] is None or a["valid_to"] > b["valid_from"]:
                problems.append(f"key {k}: {_interval(a)} overlaps {_interval(b)}")
    return problems


def _interval(r: dict[str, Any]) -> str:
    end = "open" if r["valid_to"] is None else r["valid_to"].isoformat()
    return f"[{r['valid_from'].isoformat()}, {end})"


def counts(result: dict[str, Any]) -> tuple[int, int, int, int]:
    return (
        result["rows_inserted"],
        result["rows_updated"],
        result["rows_deleted"],
        result["rows_unchanged"],
    )


# --- a key that returns ----------------------------------------------------------------

CONTROL = 100  # always present, never changes


def _returning_keys(
    dbs: Any, path: str, handle_deletes: str, ttl: timedelta | None, event_time: bool
) -> list[str]:
    """Insert, delete and bring back a set of keys; the problems found (empty: none)."""
    case = Case(dbs, path)
    where = f"ttl={'1 day' if ttl else None}, event_timestamp_column={'ts' if event_time else None}"
    options: dict[str, Any] = {
        "handle_deletes": handle_deletes,
        "ttl": ttl,
        "event_timestamp_column": "ts" if event_time else None,
    }
    # Event times well inside ttl (one day): nothing here is expired.
    e0 = case.now() - 2 * HOUR
    # with an event time: the returning row's, relative to the closed version's
    shifts = {"equal": timedelta(0), "earlier": -HOUR, "later": HOUR}
    if not event_time:
        shifts = {"": timedelta(0)}  # ts is then a compared column: kept for "same values"
    returning: dict[int, Row] = {}
    first: dict[int, Row] = {CONTROL: ("control", e0)}
    labels: dict[int, str] = {}
    for k, (values, shift) in enumerate(itertools.product(("same", "changed"), shifts), 1):
        first[k] = (f"v{k}", e0)
        returning[k] = (f"v{k}" if values == "same" else f"v{k} changed", e0 + shifts[shift])
        labels[k] = f"{values} values" + (f", event time {shift}" if event_time else "")
    keys = sorted(returning)

    case.load(first)
    assert counts(case.sync(**options)) == (len(first), 0, 0, 0), where
    case.load({CONTROL: first[CONTROL]})
    gone = case.sync(**options)
    assert counts(gone) == (0, 0, len(keys), 1), where
    assert not any(r["is_current"] for r in case.versions() if r["k"] != CONTROL), where

    case.load({CONTROL: first[CONTROL], **returning})
    back = case.sync(**options)
    problems = [f"{where}: {p}" for p in history_problems(case.versions())]
    versions = by_key(case.versions())
    for k in keys:
        current = [r for r in versions[k] if r["is_current"]]
        if not current:
            problems.append(f"{where}: key {k} ({labels[k]}) came back with no current version")
        elif (current[0]["v"], current[0]["ts"]) != returning[k]:
            problems.append(f"{where}: key {k} ({labels[k]}) current version {current[0]}")
    if counts(back) != (len(keys), 0, 0, 1):
        problems.append(
            f"{where}: returning run reported (ins, upd, del, unch) = {counts(back)}, "
            f"expected {(len(keys), 0, 0, 1)}"
        )
    if problems:
        return problems

    # the same snapshot again changes nothing
    before = case.versions()
    again = case.sync(**options)
    if counts(again) != (0, 0, 0, len(keys) + 1) or case.versions() != before:
        problems.append(f"{where}: re-run of the same snapshot changed something: {again}")
    return problems


@pytest.mark.parametrize("handle_deletes", ["soft", "hard"])
@pytest.mark.parametrize("path", PATHS)
def test_a_returning_key_always_gets_a_current_version(
    dbs: Any, path: str, handle_deletes: str
) -> None:
    """Every combination of ttl (None / one day) and event_timestamp_column (None / set);
    with an event time, the returning row's is equal to, earlier or later than the
    closed version's, with the same values or changed ones."""
    problems: list[str] = []
    for ttl, event_time in itertools.product((None, DAY), (False, True)):
        problems += _returning_keys(dbs, path, handle_deletes, ttl, event_time)
    assert not problems, "\n".join(problems)


# --- versions never overlap, whatever the stored valid_from -----------------------------

FUTURE = "event time in the future"


def _future_then_change(dbs: Any, path: str, variant: str) -> list[str]:
    """A version that starts a day ahead of the clock, then a change of its values synced
    in a run that has no event time for it; the problems found (empty: none)."""
    case = Case(dbs, path)
    future = case.now() + DAY
    first: dict[str, Any] = {"event_timestamp_column": "ts", "compare_columns": ("v",)}
    later = dict(first)
    changed: Row = ("b", future)
    if variant == "synced without event_timestamp_column":
        later["event_timestamp_column"] = None
    elif variant == "event column NULL":
        changed = ("b", None)
    elif variant == "synced without event_timestamp_column, handle_deletes='soft'":
        first["handle_deletes"] = later["handle_deletes"] = "soft"
        later["event_timestamp_column"] = None
    elif variant == "synced without event_timestamp_column, ttl=1 day":
        first["ttl"] = later["ttl"] = DAY
        later["event_timestamp_column"] = None
    else:
        raise AssertionError(variant)
    where = f"{FUTURE}, then a change {variant}"
    case.load({1: ("a", future), 2: ("x", future)})
    case.sync(**first)
    case.load({1: changed, 2: ("x", future)})
    result = case.sync(**later)
    versions = case.versions()
    problems = [f"{where}: {p}" for p in history_problems(versions)]
    mine = by_key(versions)[1]
    if [r["v"] for r in mine] != ["a", "b"] or not mine[-1]["is_current"]:
        problems.append(f"{where}: versions of key 1: {mine}")
    if (result["rows_inserted"], result["rows_updated"]) != (0, 1):
        problems.append(f"{where}: reported {result}")
    return problems


@pytest.mark.parametrize("path", PATHS)
def test_versions_never_overlap_after_a_valid_from_in_the_future(dbs: Any, path: str) -> None:
    problems: list[str] = []
    for variant in (
        "synced without event_timestamp_column",
        "event column NULL",
        "synced without event_timestamp_column, handle_deletes='soft'",
        "synced without event_timestamp_column, ttl=1 day",
    ):
        problems += _future_then_change(dbs, path, variant)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", PATHS)
def test_a_future_version_then_runs_without_event_time_keep_history_disjoint(
    dbs: Any, path: str
) -> None:
    """Several runs after the future version, each changing the key, none with an event
    time: every new version starts at or after the end of the one before."""
    case = Case(dbs, path)
    future = case.now() + DAY
    case.load({1: ("a", future)})
    case.sync(event_timestamp_column="ts", compare_columns=("v",))
    for value in ("b", "c", "d"):
        case.load({1: (value, future)})
        result = case.sync(compare_columns=("v",))
        assert (result["rows_inserted"], result["rows_updated"]) == (0, 1), result
        problems = history_problems(case.versions())
        assert not problems, "\n".join(problems)
    assert [r["v"] for r in case.versions()] == ["a", "b", "c", "d"]


# --- ttl: rows already older than ttl, expiries counted ---------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_a_row_already_older_than_ttl_is_inserted_expired_and_counted(dbs: Any, path: str) -> None:
    case = Case(dbs, path)
    options = {"ttl": HOUR, "event_timestamp_column": "ts"}
    now = case.now()
    stale, fresh = now - 3 * HOUR, now - 10 * timedelta(minutes=1)
    case.load({1: ("a", stale), 2: ("b", fresh), 3: ("c", None)})
    first = case.sync(**options)

    versions = by_key(case.versions())
    assert [(r["v"], r["is_current"]) for r in versions[1]] == [("a", False)], (
        "a row whose event time is older than ttl must be inserted not current in the "
        f"same run: {versions[1]}"
    )
    (old,) = versions[1]
    assert old["valid_from"] == stale and old["valid_to"] == stale + HOUR
    assert [r["is_current"] for r in versions[2]] == [True]
    assert [r["is_current"] for r in versions[3]] == [True]
    assert counts(first) == (3, 0, 0, 0)
    assert first["rows_expired"] == 1, first

    # the same source again: the expired row is that very version, nothing new arrived
    before = case.versions()
    second = case.sync(**options)
    assert case.versions() == before
    assert counts(second) == (0, 0, 0, 3) and second["rows_expired"] == 0, second

    # a new value for key 1, still older than ttl: a new version, inserted expired, after
    # the old one's end
    case.load({1: ("a2", now - 150 * timedelta(minutes=1)), 2: ("b", fresh), 3: ("c", None)})
    third = case.sync(**options)
    versions = by_key(case.versions())
    assert [(r["v"], r["is_current"]) for r in versions[1]] == [("a", False), ("a2", False)]
    new = versions[1][1]
    assert new["valid_from"] >= old["valid_to"] and new["valid_to"] == new["valid_from"] + HOUR
    assert not history_problems(case.versions())
    assert counts(third) == (1, 0, 0, 2) and third["rows_expired"] == 1, third

    assert [h["rows_expired"] for h in case.history()] == [1, 0, 1]


@pytest.mark.parametrize("path", PATHS)
def test_versions_expired_by_ttl_in_a_run_are_counted(dbs: Any, path: str) -> None:
    """A current version that reaches ``valid_from + ttl`` between two runs is closed by
    the second, which reports it in ``rows_expired`` and in ``run_history``."""
    case = Case(dbs, path)
    options = {"ttl": HOUR, "event_timestamp_column": "ts"}
    edge = case.now() - HOUR + timedelta(seconds=2)  # expires two seconds from now
    case.load({1: ("a", edge), 2: ("b", edge + HOUR)})
    first = case.sync(**options)
    assert counts(first) == (2, 0, 0, 0) and first["rows_expired"] == 0, first
    assert all(r["is_current"] for r in case.versions())

    while case.now() < edge + HOUR + timedelta(milliseconds=200):
        time.sleep(0.2)
    second = case.sync(**options)
    versions = by_key(case.versions())
    # key 1 expired at valid_from + ttl, and its unchanged source row is not re-inserted
    assert [(r["is_current"], r["valid_to"]) for r in versions[1]] == [(False, edge + HOUR)]
    assert [r["is_current"] for r in versions[2]] == [True]
    assert counts(second)[:3] == (0, 0, 0) and second["rows_expired"] == 1, second
    assert [h["rows_expired"] for h in case.history()] == [0, 1]


def test_run_history_has_a_rows_expired_column(dbs: Any) -> None:
    case = Case(dbs, "same_db")
    case.load({1: ("a", None)})
    case.sync()
    with psycopg.connect(dbs.warehouse_url) as conn:
        row = conn.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = "
            "'ematix_flow' AND table_name = 'run_history' AND column_name = 'rows_expired'"
        ).fetchone()
    assert row is not None, "ematix_flow.run_history has no rows_expired column"
    assert case.history()[-1]["rows_expired"] == 0
