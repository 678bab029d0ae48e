"""Incremental runs (``incremental_column=``): across several runs with new source rows
arriving in between, no row is lost and none is loaded twice, on both paths.

``append`` is the sharp mode here: its target has no key, so a row loaded twice shows
up as a duplicate instead of being absorbed by an upsert; ``merge`` is checked too.
The watermark stored after each run is the maximum value seen so far.

A row that arrives *after* a run with the same watermark value as that run's maximum
(e.g. a transaction that committed late with the same ``updated_at``) is loaded by the
keyed modes, which read ``>=`` the stored watermark (rows already loaded at that value
are re-read and left unchanged): see
``test_late_row_with_the_stored_watermark_value_is_loaded``. ``append`` reads strictly
after the watermark, so its incremental column must be strictly increasing.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ematix_flow import _core, pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text, TimestampTZ

pytestmark = pytest.mark.db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class EventsLog(ManagedTable):
    """Append target: no key, so a double load would be visible."""

    __schema__ = "wh"
    __tablename__ = "events_log"

    id = Column(BigInt(), nullable=False)
    ts = Column(TimestampTZ(), nullable=False)
    payload = Column(Text())


class EventsByKey(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "events_by_key"

    id = Column(BigInt(), nullable=False, primary_key=True)
    ts = Column(TimestampTZ(), nullable=False)
    payload = Column(Text())


TARGETS = {"append": EventsLog, "merge": EventsByKey}


class Incremental:
    def __init__(self, dbs: Any, *, mode: str, path: str) -> None:
        self.dbs = dbs
        self.mode = mode
        self.path = path
        self.target = TARGETS[mode]
        self.source_db = "source" if path == "cross_db" else "warehouse"
        self.source_url = dbs.source_url if path == "cross_db" else dbs.warehouse_url
        with dbs.connect(self.source_db) as conn:
            conn.execute("CREATE SCHEMA src")
            conn.execute(
                "CREATE TABLE src.events (id bigint PRIMARY KEY, ts timestamptz NOT NULL, "
                "payload text)"
            )

    def arrive(self, *rows: tuple[int, datetime]) -> None:
        with self.dbs.connect(self.source_db) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO src.events (id, ts, payload) VALUES (%s, %s, %s)",
                [(i, ts, f"event {i}") for i, ts in rows],
            )

    def sync(self) -> dict[str, Any]:
        result = pipeline.sync(
            target=self.target,
            source=Source.postgres_query(
                _core.connect(self.source_url), "SELECT id, ts, payload FROM src.events"
            ),
            target_connection=_core.connect(self.dbs.warehouse_url),
            mode=self.mode,
            keys=("id",) if self.mode == "merge" else None,
            incremental_column="ts",
        )
        assert result["status"] == "succeeded" and result["path"] == self.path, result
        return result

    def source_rows(self) -> Counter[tuple[Any, ...]]:
        with self.dbs.connect(self.source_db) as conn:
            return Counter(conn.execute("SELECT id, ts, payload FROM src.events").fetchall())

    def target_rows(self) -> Counter[tuple[Any, ...]]:
        with self.dbs.connect("warehouse") as conn:
            return Counter(
                conn.execute(
                    f"SELECT id, ts, payload FROM wh.{self.target.__tablename__}"
                ).fetchall()
            )

    def watermark(self) -> datetime:
        with self.dbs.connect("warehouse") as conn:
            rows = conn.execute(
                "SELECT column_name, value::timestamptz FROM ematix_flow.watermarks "
                "WHERE target = %s",
                (f"wh.{self.target.__tablename__}",),
            ).fetchall()
        assert len(rows) == 1 and rows[0][0] == "ts", rows
        return rows[0][1]

    def check(self) -> None:
        target = self.target_rows()
        assert max(target.values()) == 1, f"rows loaded twice: {target - self.source_rows()}"
        assert target == self.source_rows(), "rows lost or loaded twice"
        assert self.watermark() == max(ts for _, ts, _ in target)


@pytest.mark.parametrize("path", ["same_db", "cross_db"])
@pytest.mark.parametrize("mode", ["append", "merge"])
def test_new_rows_across_runs_are_loaded_exactly_once(dbs: Any, mode: str, path: str) -> None:
    s = Incremental(dbs, mode=mode, path=path)
    second = timedelta(seconds=1)

    # several rows share the batch's maximum: all of them are loaded, none again later
    s.arrive((1, T0), (2, T0 + second), (3, T0 + second), (4, T0 + second))
    assert s.sync()["rows_inserted"] == 4
    s.check()

    # nothing new: nothing loaded, watermark kept
    assert s.sync()["rows_inserted"] == 0
    s.check()

    s.arrive((5, T0 + 2 * second), (6, T0 + 2 * second), (7, T0 + 3 * second))
    assert s.sync()["rows_inserted"] == 3
    s.check()

    # a batch whose rows arrive out of order, ties at its maximum
    s.arrive((8, T0 + 5 * second), (9, T0 + 5 * second), (10, T0 + 4 * second))
    s.arrive((11, T0 + 5 * second))
    assert s.sync()["rows_inserted"] == 4
    s.check()
    assert s.sync()["rows_inserted"] == 0
    s.check()
    assert sum(s.target_rows().values()) == 11


@pytest.mark.parametrize("path", ["same_db", "cross_db"])
def test_late_row_with_the_stored_watermark_value_is_loaded(dbs: Any, path: str) -> None:
    s = Incremental(dbs, mode="merge", path=path)
    s.arrive((1, T0), (2, T0 + timedelta(seconds=1)))
    s.sync()
    s.check()
    # committed late, with the same timestamp as the stored watermark
    s.arrive((3, T0 + timedelta(seconds=1)))
    s.sync()
    s.check()


def test_watermark_commits_with_the_data(dbs: Any) -> None:
    """A failing run keeps the old watermark and loads nothing; the next run catches up."""
    s = Incremental(dbs, mode="append", path="cross_db")
    s.arrive((1, T0))
    s.sync()
    s.check()
    # the next run fails at the target: a check constraint rejects one of its rows
    with dbs.connect("warehouse") as conn:
        conn.execute("ALTER TABLE wh.events_log ADD CONSTRAINT no_13 CHECK (id <> 13)")
    s.arrive((2, T0 + timedelta(seconds=1)), (13, T0 + timedelta(seconds=2)))
    with pytest.raises(Exception, match="no_13"):
        s.sync()
    assert s.target_rows() == Counter({(1, T0, "event 1"): 1})
    assert s.watermark() == T0
    with dbs.connect("warehouse") as conn:
        conn.execute("ALTER TABLE wh.events_log DROP CONSTRAINT no_13")
    s.sync()
    s.check()
