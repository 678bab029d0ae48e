"""Property-based tests: random sequences of source snapshots through merge, scd1 and
scd2, on both paths, checked after every step against a small Python model.

Each example draws ``handle_deletes`` (None / "soft" / "hard"), for scd2 whether
``valid_from`` comes from an event-time column, and 1–5 full snapshots of a tiny key
space (keys come, change, vanish and return; values include NULLs, unicode, numerics
and timestamps with time zones, including event times in the future and the past).
After each sync the whole target is read back and compared with the model of its mode,
and the reported counts with the model's. scd2 is also checked for its invariants (at
most one current version per key, validity intervals that never overlap, closed
history never rewritten, no version starting before its event time). After the last
step the same snapshot is synced again and must change nothing: not a value, not a
timestamp, not a row version (``xmin``).

Every example uses its own source and target tables (names carry a random tag), so
the databases of the ``dbs`` fixture are shared by all examples of one test.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ematix_flow import _core, pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Numeric, Text, TimestampTZ

pytestmark = pytest.mark.db

Values = tuple[str | None, Decimal | None, datetime | None]
Snapshot = dict[int, Values]
Counts = tuple[int, int, int]

texts = st.sampled_from([None, "a", "b", "ü'\"x"])
numbers = st.sampled_from([None, Decimal("0"), Decimal("1.5"), Decimal("-2.25")])
# event times: NULL, equal instants written in two zones, the far future (a new version
# must still start after it), the past
times = st.sampled_from(
    [
        None,
        datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
        datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(2031, 6, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2001, 1, 1, tzinfo=UTC),
    ]
)
snapshots = st.dictionaries(st.integers(1, 6), st.tuples(texts, numbers, times), max_size=6)
VALUE_COLUMNS = ("v", "n", "ts")
sequences = st.lists(snapshots, min_size=1, max_size=5)
deletes = st.sampled_from([None, "soft", "hard"])

PROPERTY_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- the models -----------------------------------------------------------------------


@dataclass
class KeyedModel:
    """merge / scd1: one row per key; ``deleted`` is the soft-delete flag."""

    handle_deletes: str | None
    rows: dict[int, Values] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)

    def apply(self, snap: Snapshot) -> Counts:
        """Apply one snapshot; return the (inserted, updated, deleted) it should report."""
        ins = upd = dele = 0
        for k, v in snap.items():
            if k not in self.rows:
                ins += 1
            elif self.rows[k] != v or k in self.deleted:
                upd += 1
            self.rows[k] = v
            self.deleted.discard(k)
        for k in list(self.rows):
            if k in snap:
                continue
            if self.handle_deletes == "hard":
                del self.rows[k]
                dele += 1
            elif self.handle_deletes == "soft" and k not in self.deleted:
                self.deleted.add(k)
                dele += 1
        return ins, upd, dele


@dataclass
class Scd2Model:
    """scd2: per key, the list of versions' values and whether the last is current.

    With an event time (``ts``), ``ts`` is not compared (the default compare columns
    leave out ``event_timestamp_column``): a new ``ts`` alone is not a new version."""

    handle_deletes: str | None
    event_time: bool = False
    versions: dict[int, list[Values]] = field(default_factory=dict)
    current: set[int] = field(default_factory=set)

    def apply(self, snap: Snapshot) -> Counts:
        """Apply one snapshot; return the (inserted, updated, deleted) it should report."""
        ins = upd = dele = 0
        compared = slice(0, 2) if self.event_time else slice(None)
        for k, v in snap.items():
            history = self.versions.setdefault(k, [])
            if k in self.current:
                if history[-1][compared] == v[compared]:
                    continue
                upd += 1
            else:
                ins += 1
            history.append(v)
            self.current.add(k)
        if self.handle_deletes:
            dele = len(self.current - set(snap))
            self.current &= set(snap)
        return ins, upd, dele


# --- the database side ----------------------------------------------------------------


def _table_class(schema: str, name: str) -> type[ManagedTable]:
    attrs: dict[str, Any] = {
        "__schema__": schema,
        "__tablename__": name,
        "k": Column(BigInt(), nullable=False, primary_key=True),
        "v": Column(Text()),
        "n": Column(Numeric(8, 2)),
        "ts": Column(TimestampTZ()),
    }
    return type("PropTarget", (ManagedTable,), attrs)


class Case:
    """One example's source table, target class and sync call."""

    def __init__(
        self, dbs: Any, *, mode: str, path: str, handle_deletes: str | None, event_time: bool
    ) -> None:
        tag = uuid.uuid4().hex[:10]
        self.mode = mode
        self.event_time = event_time
        self.handle_deletes = handle_deletes
        self.source_db = "source" if path == "cross_db" else "warehouse"
        self.source_url = dbs.source_url if path == "cross_db" else dbs.warehouse_url
        self.source_table = f"snap_{tag}"
        self.target = _table_class("wh", f"t_{tag}")
        self.dbs = dbs
        with dbs.connect(self.source_db) as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS src")
            conn.execute(
                f"CREATE TABLE src.{self.source_table} (k bigint PRIMARY KEY, v text, "
                "n numeric(8,2), ts timestamptz)"
            )

    def load(self, snap: Snapshot) -> None:
        with self.dbs.connect(self.source_db) as conn, conn.transaction():
            conn.execute(f"DELETE FROM src.{self.source_table}")
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO src.{self.source_table} (k, v, n, ts) VALUES (%s, %s, %s, %s)",
                    [(k, *values) for k, values in snap.items()],
                )

    def sync(self) -> dict[str, Any]:
        result = pipeline.sync(
            target=self.target,
            source=Source.postgres_query(
                _core.connect(self.source_url), f"SELECT k, v, n, ts FROM src.{self.source_table}"
            ),
            target_connection=_core.connect(self.dbs.warehouse_url),
            mode=self.mode,
            keys=("k",),
            handle_deletes=self.handle_deletes,
            event_timestamp_column="ts" if self.event_time else None,
        )
        assert result["status"] == "succeeded", result
        return result

    def rows(self) -> list[dict[str, Any]]:
        """Every target row with every column (framework ones too) and its ``xmin``."""
        with self.dbs.connect("warehouse", row_factory=psycopg.rows.dict_row) as conn:
            order = "k, valid_from" if self.mode == "scd2" else "k"
            return conn.execute(
                f"SELECT xmin::text AS __xmin, * FROM wh.{self.target.__tablename__} "
                f"ORDER BY {order}"
            ).fetchall()


def _check_keyed(model: KeyedModel, rows: list[dict[str, Any]], before: dict[int, dict]) -> None:
    got = {r["k"]: _values(r) for r in rows}
    assert len(got) == len(rows), "duplicate keys in the target"
    assert got == model.rows
    for r in rows:
        old = before.get(r["k"])
        if old is None or _values(old) != _values(r):
            continue
        if model.handle_deletes != "soft" or (old["_deleted_at"] is None) == (
            r["_deleted_at"] is None
        ):
            # no-op updates are not writes
            assert r["__xmin"] == old["__xmin"], f"key {r['k']} rewritten unchanged"
    if model.handle_deletes == "soft":
        flagged = {r["k"] for r in rows if r["_deleted_at"] is not None}
        assert flagged == model.deleted
        for r in rows:
            old = before.get(r["k"])
            if old is not None and old["_deleted_at"] is not None and r["k"] in model.deleted:
                # a key still absent keeps its tombstone: never stamped twice
                assert r["_deleted_at"] == old["_deleted_at"]


def _values(row: dict[str, Any]) -> Values:
    return tuple(row[c] for c in VALUE_COLUMNS)  # type: ignore[return-value]


def _check_scd2(
    model: Scd2Model, rows: list[dict[str, Any]], closed_before: list[dict], event_time: bool
) -> None:
    by_key: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault(r["k"], []).append(r)
    assert set(by_key) == set(model.versions)
    for k, versions in by_key.items():
        assert [_values(r) for r in versions] == model.versions[k], f"history of key {k}"
        current = [r for r in versions if r["is_current"]]
        assert len(current) <= 1, f"key {k} has {len(current)} current versions"
        assert (k in model.current) == bool(current)
        if current:
            assert current[0] is versions[-1] and current[0]["valid_to"] is None
        for r in versions:
            if not r["is_current"]:
                assert r["valid_to"] is not None and r["valid_from"] <= r["valid_to"]
            if event_time and r["ts"] is not None:
                assert r["valid_from"] >= r["ts"], f"key {k} starts before its event time"
        for a, b in itertools.pairwise(versions):
            assert a["valid_to"] is not None and a["valid_to"] <= b["valid_from"], (
                f"overlapping versions of key {k}"
            )
    now = {(r["k"], r["valid_from"]): r for r in rows}
    for old in closed_before:
        assert now.get((old["k"], old["valid_from"])) == old, "closed history was rewritten"


def _run_sequence(
    dbs: Any, mode: str, path: str, handle: str | None, event_time: bool, steps: list
) -> None:
    case = Case(dbs, mode=mode, path=path, handle_deletes=handle, event_time=event_time)
    model: KeyedModel | Scd2Model = (
        Scd2Model(handle, event_time=event_time) if mode == "scd2" else KeyedModel(handle)
    )
    rows: list[dict[str, Any]] = []
    for snap in steps:
        case.load(snap)
        before = rows
        result = case.sync()
        expected = model.apply(snap)
        assert result["path"] == path
        reported = (result["rows_inserted"], result["rows_updated"], result["rows_deleted"])
        assert reported == expected, "reported counts (inserted, updated, deleted)"
        rows = case.rows()
        if mode == "scd2":
            closed = [r for r in before if not r["is_current"]]
            _check_scd2(model, rows, closed, event_time)
        else:
            _check_keyed(model, rows, {r["k"]: r for r in before})
    # a re-run on the unchanged source changes nothing at all
    result = case.sync()
    assert case.rows() == rows
    assert (result["rows_inserted"], result["rows_updated"], result["rows_deleted"]) == (0, 0, 0)
    assert result["rows_unchanged"] == len(steps[-1])


@pytest.mark.parametrize("path", ["same_db", "cross_db"])
@pytest.mark.parametrize("mode", ["merge", "scd1", "scd2"])
@PROPERTY_SETTINGS
@given(handle=deletes, event_time=st.booleans(), steps=sequences)
def test_snapshot_sequences_match_the_model(
    dbs: Any, mode: str, path: str, handle: str | None, event_time: bool, steps: list[Snapshot]
) -> None:
    """``event_time`` (scd2 only): ``valid_from`` of new versions comes from ``ts``."""
    _run_sequence(dbs, mode, path, handle, event_time and mode == "scd2", steps)
