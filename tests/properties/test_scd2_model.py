"""Property-based test of scd2 at its edges: random sequences of source snapshots under
``ttl`` / ``event_timestamp_column`` / ``handle_deletes`` combinations, on both paths,
checked after every run against a Python model that knows validity intervals.

Each example draws ``handle_deletes`` (None / "soft" / "hard") and 1–5 full snapshots of
a tiny key space (keys come, change, vanish and return). Event times are drawn relative
to the warehouse clock at the start of the example: NULL, ten hours and two and a half
hours ago (older than the one-hour ``ttl``: such rows are expired when inserted), forty
minutes ago (current under ``ttl``, with twenty minutes' margin), and a day ahead. Every
``valid_from`` the engine can produce lies at least twenty minutes from an expiry
boundary, so whether a version is expired does not depend on how long a run takes.

The families (test parameters), 20 examples each: ``ttl`` None or one hour, and whether
every run passes ``event_timestamp_column="ts"`` or each run draws it (so an example may
use it in no run, in some or in all; a run without an event time then follows stored
versions that start in the future). ``compare_columns=("v",)`` keeps the row hash the
same in both kinds of run. Two explicit examples run in every family: a version a day
ahead followed by a change without event time (and a row older than ``ttl``), and a
deleted key that returns with the same values and event time.

Checked after each run:

- at most one current version per key, the latest, with ``valid_to`` NULL; every key
  of the snapshot has exactly one current version unless its latest version is expired
  by ``ttl`` (closed at ``valid_from + ttl``);
- versions of a key never overlap (half-open ``[valid_from, valid_to)``), and a version
  whose ``valid_from`` came from an event time does not start before it;
- closed history is never rewritten (every closed row is identical after the run,
  ``xmin`` included);
- the history of every key (values, current or not, expired or not) is the model's;
- the reported counts (inserted, updated, deleted, unchanged, expired) are the model's.

After the last snapshot the same snapshot is synced again and changes nothing.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ematix_flow import _core, pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text, TimestampTZ

pytestmark = pytest.mark.db

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
TTL = HOUR

Offset = timedelta | None
Drawn = tuple[str | None, Offset]  # (v, event time relative to the example's start)
Values = tuple[str | None, datetime | None]  # (v, ts) as stored
Step = tuple[dict[int, Drawn], bool]  # a full snapshot, and whether the run uses ts
Counts = tuple[int, int, int, int, int]  # inserted, updated, deleted, unchanged, expired

values = st.sampled_from([None, "a", "b"])
offsets = st.sampled_from([None, -10 * HOUR, -150 * MINUTE, -40 * MINUTE, 24 * HOUR])
snapshots = st.dictionaries(st.integers(1, 4), st.tuples(values, offsets), max_size=4)
steps = st.lists(st.tuples(snapshots, st.booleans()), min_size=1, max_size=5)
deletes = st.sampled_from([None, "soft", "hard"])

MODEL_SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: A version a day ahead, then a change in a run without event time (overlapping
#: versions, unless ttl is set); a row ten hours old (expired when inserted, under ttl).
FUTURE_THEN_CHANGE: list[Step] = [
    ({1: ("a", 24 * HOUR), 2: ("a", -10 * HOUR)}, True),
    ({1: ("b", 24 * HOUR), 2: ("a", -10 * HOUR)}, False),
]
#: A key deleted, then back with the same values and event time.
DELETED_THEN_BACK: list[Step] = [
    ({1: ("a", -40 * MINUTE), 2: ("a", -40 * MINUTE)}, True),
    ({2: ("a", -40 * MINUTE)}, True),
    ({1: ("a", -40 * MINUTE), 2: ("a", -40 * MINUTE)}, True),
]


# --- the model --------------------------------------------------------------------------


@dataclass
class Version:
    values: Values
    valid_from: datetime  # run times are the test's reading of the clock before the run
    valid_to: datetime | None = None
    expired: bool = False  # closed by ttl (when inserted, or by a later run)
    from_event: bool = False  # valid_from came from the event time


@dataclass
class Scd2Model:
    """scd2 with compare columns ``("v",)``: per key, its versions.

    - ``ttl`` first: a current version with ``valid_from + ttl <= now`` is closed at
      ``valid_from + ttl`` (expired).
    - A source row's valid_from is its event time in a run that uses the event time and
      when it is not NULL, else the run time.
    - A current version whose ``v`` differs is closed and followed by a new one
      (updated); with ``handle_deletes``, a current version whose key is absent is closed
      (deleted).
    - A source key without a current version gets one (inserted), starting no earlier
      than the end of its latest version, unless its latest version was expired by ttl
      and the row is that very version (same ``v``, valid_from not later): nothing new.
    - A new version whose start is already older than ttl is inserted expired.
    """

    handle_deletes: str | None
    ttl: timedelta | None
    versions: dict[int, list[Version]] = field(default_factory=dict)

    def current(self, k: int) -> Version | None:
        history = self.versions.get(k)
        return history[-1] if history and history[-1].valid_to is None else None

    def apply(self, snap: dict[int, Values], event: bool, now: datetime) -> Counts:
        ins = upd = dele = unch = expired = 0
        if self.ttl is not None:
            for history in self.versions.values():
                cur = history[-1]
                if cur.valid_to is None and cur.valid_from + self.ttl <= now:
                    cur.valid_to, cur.expired = cur.valid_from + self.ttl, True
                    expired += 1
        if self.handle_deletes:
            for k in self.versions:
                cur = self.current(k)
                if cur is not None and k not in snap:
                    cur.valid_to = max(now, cur.valid_from)
                    dele += 1
        for k, row in snap.items():
            history = self.versions.setdefault(k, [])
            from_event = event and row[1] is not None
            source_vf = row[1] if from_event else now
            assert source_vf is not None
            cur = self.current(k)
            if cur is not None:
                if cur.values[0] == row[0]:
                    unch += 1
                    continue
                cur.valid_to = max(source_vf, cur.valid_from)
                upd += 1
            else:
                last = history[-1] if history else None
                if (
                    last is not None
                    and last.expired
                    and last.values[0] == row[0]
                    and source_vf <= last.valid_from
                ):
                    unch += 1
                    continue
                ins += 1
            start = source_vf
            if history:
                last = history[-1]
                assert last.valid_to is not None
                start = max(start, last.valid_from, last.valid_to)
            new = Version(row, start, from_event=from_event)
            if self.ttl is not None and start + self.ttl <= now:
                new.valid_to, new.expired = start + self.ttl, True
                expired += 1
            history.append(new)
        return ins, upd, dele, unch, expired


# --- the database side ------------------------------------------------------------------


def _table_class(name: str) -> type[ManagedTable]:
    attrs: dict[str, Any] = {
        "__schema__": "wh",
        "__tablename__": name,
        "k": Column(BigInt(), nullable=False, primary_key=True),
        "v": Column(Text()),
        "ts": Column(TimestampTZ()),
    }
    return type("ModelTarget", (ManagedTable,), attrs)


class Case:
    """One example's source table, target class and sync call; ``close()`` when done."""

    def __init__(self, dbs: Any, *, path: str, handle_deletes: str | None, ttl: Any) -> None:
        tag = uuid.uuid4().hex[:10]
        self.path = path
        self.handle_deletes = handle_deletes
        self.ttl = ttl
        self.warehouse_url = dbs.warehouse_url
        self.source_url = dbs.source_url if path == "cross_db" else dbs.warehouse_url
        self.source_table = f"src.snap_{tag}"
        self.target = _table_class(f"t_{tag}")
        self.warehouse = dbs.connect("warehouse", row_factory=psycopg.rows.dict_row)
        self.source = dbs.connect("source") if path == "cross_db" else self.warehouse
        self.source.execute("CREATE SCHEMA IF NOT EXISTS src")
        self.source.execute(
            f"CREATE TABLE {self.source_table} (k bigint PRIMARY KEY, v text, ts timestamptz)"
        )

    def close(self) -> None:
        self.warehouse.close()
        self.source.close()

    def now(self) -> datetime:
        row = self.warehouse.execute("SELECT now() AS now").fetchone()
        assert row is not None
        return row["now"]

    def load(self, snap: dict[int, Values]) -> None:
        with self.source.transaction():
            self.source.execute(f"DELETE FROM {self.source_table}")
            with self.source.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {self.source_table} (k, v, ts) VALUES (%s, %s, %s)",
                    [(k, *row) for k, row in snap.items()],
                )

    def sync(self, event: bool) -> dict[str, Any]:
        result = pipeline.sync(
            target=self.target,
            source=Source.postgres_query(
                _core.connect(self.source_url), f"SELECT k, v, ts FROM {self.source_table}"
            ),
            target_connection=_core.connect(self.warehouse_url),
            mode="scd2",
            keys=("k",),
            compare_columns=("v",),
            handle_deletes=self.handle_deletes,
            ttl=self.ttl,
            event_timestamp_column="ts" if event else None,
            force_path=self.path,
        )
        assert result["status"] == "succeeded" and result["path"] == self.path, result
        return result

    def rows(self) -> list[dict[str, Any]]:
        """Every version with every column and its ``xmin``, by key and valid_from."""
        return self.warehouse.execute(
            f"SELECT xmin::text AS __xmin, * FROM wh.{self.target.__tablename__} "
            "ORDER BY k, valid_from"
        ).fetchall()


def _reported(result: dict[str, Any]) -> tuple[Any, ...]:
    return (
        result["rows_inserted"],
        result["rows_updated"],
        result["rows_deleted"],
        result["rows_unchanged"],
        result.get("rows_expired"),
    )


def _interval(r: dict[str, Any]) -> str:
    end = "open" if r["valid_to"] is None else r["valid_to"].isoformat()
    return f"[{r['valid_from'].isoformat()}, {end})"


def _check(
    model: Scd2Model,
    rows: list[dict[str, Any]],
    closed_before: list[dict[str, Any]],
    snap: dict[int, Values],
    ttl: timedelta | None,
) -> None:
    by_key: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault(r["k"], []).append(r)

    # invariants, whatever the model says
    for k, versions in by_key.items():
        current = [r for r in versions if r["is_current"]]
        assert len(current) <= 1, f"key {k} has {len(current)} current versions"
        if current:
            assert current[0] is versions[-1] and current[0]["valid_to"] is None, (
                f"key {k}: the current version is not the latest open one: "
                f"{[_interval(r) for r in versions]}"
            )
        for r in versions:
            if not r["is_current"]:
                assert r["valid_to"] is not None and r["valid_from"] <= r["valid_to"], (
                    f"key {k}: closed version {_interval(r)}"
                )
        for a, b in itertools.pairwise(versions):
            assert a["valid_to"] is not None and a["valid_to"] <= b["valid_from"], (
                f"overlapping versions of key {k}: {_interval(a)} and {_interval(b)}"
            )
    for k in snap:
        latest = by_key[k][-1] if by_key.get(k) else None
        assert latest is not None, f"key {k} of the snapshot is missing"
        assert latest["is_current"] or (
            ttl is not None and latest["valid_to"] == latest["valid_from"] + ttl
        ), f"key {k} is in the snapshot but has no current version (and is not expired)"
    now = {(r["k"], r["valid_from"]): r for r in rows}
    for old in closed_before:
        assert now.get((old["k"], old["valid_from"])) == old, "closed history was rewritten"

    # the model
    expected = {k: h for k, h in model.versions.items() if h}
    assert set(by_key) == set(expected)
    for k, versions in by_key.items():
        history = expected[k]
        assert [(r["v"], r["ts"]) for r in versions] == [m.values for m in history], (
            f"history of key {k}"
        )
        for r, m in zip(versions, history, strict=True):
            assert r["is_current"] == (m.valid_to is None), (
                f"key {k}, version {_interval(r)}: is_current {r['is_current']}"
            )
            if m.expired:
                assert ttl is not None and r["valid_to"] == r["valid_from"] + ttl, (
                    f"key {k}, version {_interval(r)} should be expired at valid_from + ttl"
                )
            if m.from_event:
                assert r["ts"] is not None and r["valid_from"] >= r["ts"], (
                    f"key {k}: {_interval(r)} starts before its event time {r['ts']}"
                )


def _run(dbs: Any, path: str, handle: str | None, ttl: Any, event: str, seq: list[Step]) -> None:
    case = Case(dbs, path=path, handle_deletes=handle, ttl=ttl)
    try:
        _steps(case, handle, ttl, event, seq)
    finally:
        case.close()


def _steps(case: Case, handle: str | None, ttl: Any, event: str, seq: list[Step]) -> None:
    model = Scd2Model(handle, ttl)
    base = case.now()
    reported: list[tuple[Any, ...]] = []
    expected: list[Counts] = []
    rows: list[dict[str, Any]] = []
    plan = [*seq, seq[-1]]  # the last snapshot is synced twice
    for i, (drawn, switch) in enumerate(plan):
        use_event = switch if event == "sometimes" else True
        snap = {k: (v, None if off is None else base + off) for k, (v, off) in drawn.items()}
        case.load(snap)
        before = rows
        now = case.now()
        reported.append(_reported(case.sync(use_event)))
        expected.append(model.apply(snap, use_event, now))
        rows = case.rows()
        _check(model, rows, [r for r in before if not r["is_current"]], snap, ttl)
        if i == len(seq):
            assert rows == before, "re-syncing the same snapshot changed the target"
    assert reported == expected, (
        "reported counts per run (inserted, updated, deleted, unchanged, expired)"
    )


@pytest.mark.parametrize("path", ["same_db", "cross_db"])
@pytest.mark.parametrize("ttl", [None, TTL], ids=["no_ttl", "ttl"])
@pytest.mark.parametrize("event", ["always", "sometimes"])
@MODEL_SETTINGS
@example(handle=None, seq=FUTURE_THEN_CHANGE)
@example(handle="hard", seq=DELETED_THEN_BACK)
@given(handle=deletes, seq=steps)
def test_scd2_history_matches_the_model(
    dbs: Any, path: str, ttl: Any, event: str, handle: str | None, seq: list[Step]
) -> None:
    """``event``: whether every run passes ``event_timestamp_column="ts"``, or only the
    runs the example draws (none, some or all of them)."""
    _run(dbs, path, handle, ttl, event, seq)
