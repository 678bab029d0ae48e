"""Incremental runs (``incremental_column=``) at their edges, on both paths: NULL
incremental values, rows that tie with the stored maximum, and rows that commit late
below it (``incremental_lookback=``).

What is proved:

- NULL incremental values are never skipped in silence. A source whose incremental
  column is NULL in some rows (all of them on the first run, or rows arriving after a
  watermark is stored) is refused: ``pipeline.sync`` raises ``SourceError`` naming the
  column and the number of NULL rows, and neither the target nor the watermark changes.
- A row that arrives after a run with the same incremental value as the stored maximum is
  loaded, in every mode (append with and without a declared key, merge, scd1, scd2), and
  the rows already loaded at that value are not loaded twice. For append without a key,
  "already loaded" means an identical row: a different row at that value is loaded.
- A high-water mark cannot see a row that commits late with a value *below* the stored
  maximum (a transaction that started first and committed last): without a lookback
  that row is lost, and the tests below show it. ``incremental_lookback=`` re-reads a
  window below the watermark, so the late row is loaded by the next run; keyed modes
  re-read the window idempotently (the re-read rows count as ``rows_unchanged``, scd2
  makes no new versions), append with a declared key skips the rows it already holds, and
  append without a declared key refuses a lookback (``DefinitionError``: it needs a key).
  The lookback is a ``timedelta`` for a date/time column and an ``int`` for an integer
  column; the other way round is a ``DefinitionError``. It can be given on
  ``pipeline.sync``, ``ematix.target``, ``@ematix.pipeline`` and ``@ematix.table``.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import pytest

from ematix_flow import _core, ematix, pipeline, pk
from ematix_flow._errors import DefinitionError, SourceError
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text, TimestampTZ

pytestmark = pytest.mark.db

PATHS = ("same_db", "cross_db")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
LOOKBACK = timedelta(minutes=10)

#: The target shapes: the mode, and whether the table declares a key.
SHAPES = {
    "append": ("append", False),
    "append with a key": ("append", True),
    "merge": ("merge", True),
    "scd1": ("scd1", True),
    "scd2": ("scd2", True),
}
KEYED = ("append with a key", "merge", "scd1", "scd2")

Event = tuple[int, Any, str]  # (id, incremental value, payload)


def _table_class(name: str, *, keyed: bool, column: str, bigint: bool) -> type[ManagedTable]:
    attrs: dict[str, Any] = {
        "__schema__": "wh",
        "__tablename__": name,
        "id": Column(BigInt(), nullable=False, primary_key=keyed),
        # nullable: a NULL must be refused by the incremental rule, not by a NOT NULL
        column: Column(BigInt() if bigint else TimestampTZ()),
        "payload": Column(Text()),
    }
    return type("Feed", (ManagedTable,), attrs)


class Feed:
    """One source table ``(id, <column>, payload)`` (no key: the same id may come twice)
    and the targets synced from it, on the given path."""

    def __init__(
        self, dbs: Any, path: str, *, column: str = "changed_at", bigint: bool = False
    ) -> None:
        self.dbs = dbs
        self.path = path
        self.column = column
        self.bigint = bigint
        self.tag = uuid.uuid4().hex[:8]
        self.source_db = "source" if path == "cross_db" else "warehouse"
        self.source_url = dbs.source_url if path == "cross_db" else dbs.warehouse_url
        self.source_table = f"src.feed_{self.tag}"
        with dbs.connect(self.source_db) as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS src")
            conn.execute(
                f"CREATE TABLE {self.source_table} (id bigint NOT NULL, "
                f"{column} {'bigint' if bigint else 'timestamptz'}, payload text)"
            )

    def target(self, shape: str, suffix: str = "") -> type[ManagedTable]:
        _, keyed = SHAPES[shape]
        name = f"t_{self.tag}_{shape.replace(' ', '_')}{suffix}"
        return _table_class(name, keyed=keyed, column=self.column, bigint=self.bigint)

    def arrive(self, *rows: Event) -> None:
        with self.dbs.connect(self.source_db) as conn, conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {self.source_table} (id, {self.column}, payload) VALUES (%s, %s, %s)",
                list(rows),
            )

    def sync(self, target: type[ManagedTable], shape: str, **options: Any) -> dict[str, Any]:
        mode, keyed = SHAPES[shape]
        result = pipeline.sync(
            target=target,
            source=Source.postgres_query(
                _core.connect(self.source_url),
                f"SELECT id, {self.column}, payload FROM {self.source_table}",
            ),
            target_connection=_core.connect(self.dbs.warehouse_url),
            mode=mode,
            keys=("id",) if keyed else None,
            incremental_column=self.column,
            force_path=self.path,
            **options,
        )
        assert result["status"] == "succeeded" and result["path"] == self.path, result
        return result

    def source_rows(self) -> Counter[Event]:
        with self.dbs.connect(self.source_db) as conn:
            return Counter(
                conn.execute(
                    f"SELECT id, {self.column}, payload FROM {self.source_table}"
                ).fetchall()
            )

    def target_rows(self, target: type[ManagedTable]) -> Counter[Event]:
        """Every row of the target (for scd2: every version), with its multiplicity."""
        with self.dbs.connect("warehouse") as conn:
            exists = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (f"wh.{target.__tablename__}",)
            ).fetchone()
            if not (exists and exists[0]):
                return Counter()
            return Counter(
                conn.execute(
                    f"SELECT id, {self.column}, payload FROM wh.{target.__tablename__}"
                ).fetchall()
            )

    def watermarks(self, target: type[ManagedTable]) -> list[tuple[Any, ...]]:
        """The stored watermark rows of ``target``, every column (empty: none stored)."""
        with self.dbs.connect("warehouse") as conn:
            exists = conn.execute(
                "SELECT to_regclass('ematix_flow.watermarks') IS NOT NULL"
            ).fetchone()
            if not (exists and exists[0]):
                return []
            return conn.execute(
                "SELECT * FROM ematix_flow.watermarks WHERE target = %s ORDER BY pipeline",
                (f"wh.{target.__tablename__}",),
            ).fetchall()


# --- NULL incremental values -------------------------------------------------------------


def _refused_for_nulls(exc: pytest.ExceptionInfo[SourceError], column: str, nulls: int) -> None:
    message = str(exc.value)
    assert column in message, f"the error does not name the column: {message}"
    assert re.search(rf"(?<![\w.:-]){nulls}(?![\w.:-])", message), (
        f"the error does not give the number of NULL rows ({nulls}): {message}"
    )


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", ["append", "merge", "scd1", "scd2"])
def test_an_incremental_column_all_null_is_refused(dbs: Any, shape: str, path: str) -> None:
    """Not "every row reloaded by every run" (a NULL maximum stores no usable watermark)."""
    feed = Feed(dbs, path)
    target = feed.target(shape)
    feed.arrive((1, None, "a"), (2, None, "b"), (3, None, "c"))
    with pytest.raises(SourceError) as exc:
        feed.sync(target, shape)
    _refused_for_nulls(exc, "changed_at", 3)
    assert feed.target_rows(target) == Counter()
    assert feed.watermarks(target) == []


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", ["append", "merge", "scd1", "scd2"])
def test_null_incremental_values_after_a_watermark_are_refused(
    dbs: Any, shape: str, path: str
) -> None:
    """Not "NULL rows never loaded" (``NULL > watermark`` is never true)."""
    feed = Feed(dbs, path)
    target = feed.target(shape)
    feed.arrive((1, T0, "a"), (2, T0 + MINUTE, "b"))
    assert feed.sync(target, shape)["rows_inserted"] == 2
    rows, watermark = feed.target_rows(target), feed.watermarks(target)
    assert len(watermark) == 1

    feed.arrive((3, None, "c"), (4, None, "d"), (5, None, "e"), (6, T0 + 2 * MINUTE, "f"))
    with pytest.raises(SourceError) as exc:
        feed.sync(target, shape)
    _refused_for_nulls(exc, "changed_at", 3)
    assert feed.target_rows(target) == rows
    assert feed.watermarks(target) == watermark


# --- ties at the stored maximum -----------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_late_row_at_the_stored_maximum_is_loaded_once(dbs: Any, shape: str, path: str) -> None:
    feed = Feed(dbs, path)
    target = feed.target(shape)
    feed.arrive((1, T0, "a"), (2, T0 + MINUTE, "b"))
    assert feed.sync(target, shape)["rows_inserted"] == 2

    # committed after that run, with the same value as the stored maximum
    feed.arrive((3, T0 + MINUTE, "c"))
    second = feed.sync(target, shape)
    assert feed.target_rows(target) == feed.source_rows(), "the late row is lost or doubled"
    assert (second["rows_inserted"], second["rows_updated"]) == (1, 0), second

    third = feed.sync(target, shape)
    assert (third["rows_inserted"], third["rows_updated"]) == (0, 0), third
    assert feed.target_rows(target) == feed.source_rows()


@pytest.mark.parametrize("path", PATHS)
def test_append_without_a_key_loads_a_different_row_at_the_maximum_not_an_identical_one(
    dbs: Any, path: str
) -> None:
    feed = Feed(dbs, path)
    target = feed.target("append")
    feed.arrive((1, T0, "a"), (2, T0 + MINUTE, "b"))
    feed.sync(target, "append")
    # at the stored maximum: a different row with the same id, and a new id; (2, "b") is
    # the identical row already loaded and is not loaded again
    feed.arrive((2, T0 + MINUTE, "b, corrected"), (4, T0 + MINUTE, "d"))
    assert feed.sync(target, "append")["rows_inserted"] == 2
    assert feed.target_rows(target) == Counter(
        {
            (1, T0, "a"): 1,
            (2, T0 + MINUTE, "b"): 1,
            (2, T0 + MINUTE, "b, corrected"): 1,
            (4, T0 + MINUTE, "d"): 1,
        }
    )
    assert feed.sync(target, "append")["rows_inserted"] == 0
    assert feed.target_rows(target) == feed.source_rows()


# --- late rows below the watermark: incremental_lookback --------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", KEYED)
def test_lookback_loads_a_row_committed_late_below_the_watermark(
    dbs: Any, shape: str, path: str
) -> None:
    feed = Feed(dbs, path)
    blind, looking = feed.target(shape, "_blind"), feed.target(shape, "_lookback")
    feed.arrive((1, T0 - 60 * MINUTE, "a"), (2, T0 + 10 * MINUTE, "b"))
    assert feed.sync(blind, shape)["rows_inserted"] == 2
    assert feed.sync(looking, shape, incremental_lookback=LOOKBACK)["rows_inserted"] == 2

    # A transaction that began before row 2's commits after the runs: its updated_at is
    # five minutes below the stored maximum.
    late = (3, T0 + 5 * MINUTE, "c")
    feed.arrive(late)

    # Without a lookback the high-water mark cannot see it: it is lost, now and later.
    assert feed.sync(blind, shape)["rows_inserted"] == 0
    assert late not in feed.target_rows(blind)

    # With a ten-minute lookback the next run re-reads [max - 10 min, ...) and loads it.
    loaded = feed.sync(looking, shape, incremental_lookback=LOOKBACK)
    assert feed.target_rows(looking) == feed.source_rows()
    assert (loaded["rows_inserted"], loaded["rows_updated"]) == (1, 0), loaded
    if shape != "append with a key":
        # keyed modes: row 2, re-read in the window, is unchanged
        assert loaded["rows_unchanged"] == 1, loaded

    # re-reading the window again and again loads nothing twice, makes no new versions
    for _ in range(2):
        again = feed.sync(looking, shape, incremental_lookback=LOOKBACK)
        assert (again["rows_inserted"], again["rows_updated"]) == (0, 0), again
        if shape != "append with a key":
            assert again["rows_unchanged"] == 2, again
        assert feed.target_rows(looking) == feed.source_rows()


@pytest.mark.parametrize("path", PATHS)
def test_lookback_on_an_integer_column_is_an_int(dbs: Any, path: str) -> None:
    feed = Feed(dbs, path, column="seq", bigint=True)
    blind, looking = feed.target("merge", "_blind"), feed.target("merge", "_lookback")
    feed.arrive((1, 10, "a"), (2, 200, "b"))
    feed.sync(blind, "merge")
    feed.sync(looking, "merge", incremental_lookback=100)
    feed.arrive((3, 150, "c"))
    assert feed.sync(blind, "merge")["rows_inserted"] == 0
    loaded = feed.sync(looking, "merge", incremental_lookback=100)
    assert (loaded["rows_inserted"], loaded["rows_unchanged"]) == (1, 1), loaded
    assert feed.target_rows(looking) == feed.source_rows()
    assert (3, 150, "c") not in feed.target_rows(blind)


def test_append_without_a_key_refuses_a_lookback(dbs: Any) -> None:
    feed = Feed(dbs, "same_db")
    target = feed.target("append")
    feed.arrive((1, T0, "a"))
    with pytest.raises(DefinitionError, match=r"(?i)key"):
        feed.sync(target, "append", incremental_lookback=LOOKBACK)
    assert feed.target_rows(target) == Counter()


def test_a_lookback_must_fit_the_incremental_column_type(dbs: Any) -> None:
    stamps = Feed(dbs, "same_db")
    numbers = Feed(dbs, "same_db", column="seq", bigint=True)
    with pytest.raises(DefinitionError, match="incremental_lookback"):
        numbers.sync(numbers.target("merge"), "merge", incremental_lookback=LOOKBACK)
    with pytest.raises(DefinitionError, match="incremental_lookback"):
        stamps.sync(stamps.target("merge"), "merge", incremental_lookback=100)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("level", ["ematix.target", "@ematix.pipeline", "@ematix.table"])
def test_lookback_declared_at_each_level(
    dbs: Any, monkeypatch: pytest.MonkeyPatch, names: list[str], level: str, path: str
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", dbs.warehouse_url)
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLTP", dbs.source_url)
    feed = Feed(dbs, path)

    class Late:
        id: Annotated[BigInt, pk()]
        changed_at: TimestampTZ | None
        payload: Text | None

    lookback = {"incremental_lookback": LOOKBACK}
    table = ematix.table(
        schema="wh",
        name=f"late_{feed.tag}",
        mode="merge",
        incremental_column="changed_at",
        **(lookback if level == "@ematix.table" else {}),
    )(Late)
    target = ematix.target(table, mode="merge", **lookback) if level == "ematix.target" else table
    name = f"late_{feed.tag}"
    names.append(name)
    query = f"SELECT id, changed_at, payload FROM {feed.source_table}"

    @ematix.pipeline(
        name=name,
        target=target,
        source_connection="oltp" if path == "cross_db" else None,
        **(lookback if level == "@ematix.pipeline" else {}),
    )
    def late_rows(conn: Any) -> str:
        return query

    feed.arrive((1, T0 - 60 * MINUTE, "a"), (2, T0 + 10 * MINUTE, "b"))
    first = late_rows()
    assert first.ok and first.results[0].path == path, first
    feed.arrive((3, T0 + 5 * MINUTE, "c"))
    second = late_rows()
    assert second.ok, second
    assert feed.target_rows(table) == feed.source_rows()
    assert second.results[0].rows_inserted == 1
