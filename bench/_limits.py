"""The yardsticks the engine is measured against, written by hand for this one table.

- :func:`copy_merge` — the physical limit of a cross-DB merge: a raw binary COPY pipe
  from the source database into a temporary stage in the target database (COPY data
  coalesced into ~128 KiB writes), then one ``INSERT … ON CONFLICT … DO UPDATE … WHERE
  … IS DISTINCT FROM``, one transaction.
- :func:`hand_merge` — the floor of a same-DB merge: the bare ``INSERT … SELECT … ON
  CONFLICT … DO UPDATE … WHERE … IS DISTINCT FROM`` from the source table, one
  statement.
- :func:`hand_scd2` — hand-written same-DB SCD2: md5 row hash of the compared columns,
  one UPDATE closing changed current versions, one INSERT of new versions (changed and
  new keys; anti-join by ``NOT EXISTS``), one transaction.

Both return seconds measured around the whole unit of work (connect → commit).

- :func:`hash_cost` — the row hash alone, today's canonical one against the previous
  ``md5(ROW(…)::text)``, over the source table (same-DB) and over a temporary stage
  (cross-DB).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

from bench._data import COLUMN_DDL, COLUMNS, NON_KEY, SOURCE_QUERY

__all__ = [
    "COPY_BUFFER",
    "LimitTiming",
    "copy_merge",
    "create_limit_merge_target",
    "create_limit_scd2_target",
    "hand_merge",
    "hand_scd2",
    "hash_cost",
]

COPY_BUFFER = 128 * 1024

_COLS = ", ".join(COLUMNS)
_SETS = ", ".join(f"{c} = EXCLUDED.{c}" for c in NON_KEY)
_T_NON_KEY = ", ".join(f"t.{c}" for c in NON_KEY)
_X_NON_KEY = ", ".join(f"EXCLUDED.{c}" for c in NON_KEY)
_HASH = (
    "md5(ROW("
    + ", ".join(f"{c} AT TIME ZONE 'UTC'" if c == "updated_at" else c for c in NON_KEY)
    + ")::text)"
)


@dataclass(frozen=True)
class LimitTiming:
    seconds: float
    #: (phase, seconds) in order, e.g. ("copy", 1.1), ("upsert", 2.3)
    phases: tuple[tuple[str, float], ...] = ()
    rows_written: int = 0


def create_limit_merge_target(tgt: psycopg.Connection, table: str) -> None:
    tgt.execute("CREATE SCHEMA IF NOT EXISTS bench")
    tgt.execute(f"DROP TABLE IF EXISTS bench.{table}")
    tgt.execute(f"CREATE TABLE bench.{table} ({COLUMN_DDL}, PRIMARY KEY (id))")


def copy_merge(source_url: str, target_url: str, table: str) -> LimitTiming:
    """Binary COPY pipe source → temp stage, then one upsert into ``bench.<table>``."""
    t0 = time.perf_counter()
    with psycopg.connect(source_url) as src, psycopg.connect(target_url) as tgt:
        with tgt.transaction():
            tgt.execute(f"CREATE TEMP TABLE stage ({COLUMN_DDL}) ON COMMIT DROP")
            with (
                src.cursor().copy(f"COPY ({SOURCE_QUERY}) TO STDOUT (FORMAT BINARY)") as cin,
                tgt.cursor().copy(f"COPY stage ({_COLS}) FROM STDIN (FORMAT BINARY)") as cout,
            ):
                buf = bytearray()
                for block in cin:
                    buf += block
                    if len(buf) >= COPY_BUFFER:
                        cout.write(buf)
                        buf = bytearray()  # a fresh buffer: write() may still hold the old
                if buf:
                    cout.write(buf)
            t1 = time.perf_counter()
            cur = tgt.execute(
                f"INSERT INTO bench.{table} AS t ({_COLS}) SELECT {_COLS} FROM stage "
                f"ON CONFLICT (id) DO UPDATE SET {_SETS} "
                f"WHERE ({_T_NON_KEY}) IS DISTINCT FROM ({_X_NON_KEY})"
            )
            written = cur.rowcount
        t2 = time.perf_counter()
    return LimitTiming(
        t2 - t0, phases=(("copy", t1 - t0), ("upsert", t2 - t1)), rows_written=written
    )


def hand_merge(target_url: str, table: str) -> LimitTiming:
    """Same-DB merge from ``public.items`` into ``bench.<table>``: one bare upsert."""
    t0 = time.perf_counter()
    with psycopg.connect(target_url) as tgt:
        with tgt.transaction():
            written = tgt.execute(
                f"INSERT INTO bench.{table} AS t ({_COLS}) {SOURCE_QUERY} "
                f"ON CONFLICT (id) DO UPDATE SET {_SETS} "
                f"WHERE ({_T_NON_KEY}) IS DISTINCT FROM ({_X_NON_KEY})"
            ).rowcount
        t1 = time.perf_counter()
    return LimitTiming(t1 - t0, phases=(("upsert", t1 - t0),), rows_written=written)


def create_limit_scd2_target(tgt: psycopg.Connection, table: str) -> None:
    """The same physical shape the engine gives an SCD2 target: history rows keyed by
    (key, valid_from), at most one current version per key (partial unique index)."""
    tgt.execute("CREATE SCHEMA IF NOT EXISTS bench")
    tgt.execute(f"DROP TABLE IF EXISTS bench.{table}")
    tgt.execute(
        f"CREATE TABLE bench.{table} ({COLUMN_DDL}, valid_from timestamptz NOT NULL, "
        "valid_to timestamptz, is_current boolean NOT NULL, row_hash text NOT NULL, "
        "PRIMARY KEY (id, valid_from))"
    )
    tgt.execute(f"CREATE UNIQUE INDEX ON bench.{table} (id) WHERE is_current")


def hand_scd2(target_url: str, table: str) -> LimitTiming:
    """Same-DB SCD2 from ``public.items`` into ``bench.<table>``: close, then insert."""
    t0 = time.perf_counter()
    with psycopg.connect(target_url) as tgt:
        with tgt.transaction():
            closed = tgt.execute(
                f"UPDATE bench.{table} AS t SET is_current = false, valid_to = now() "
                f"FROM (SELECT id, {_HASH} AS h FROM public.items) AS s "
                "WHERE t.is_current AND t.id = s.id AND t.row_hash <> s.h"
            ).rowcount
            t1 = time.perf_counter()
            inserted = tgt.execute(
                f"INSERT INTO bench.{table} ({_COLS}, valid_from, valid_to, is_current, "
                f"row_hash) SELECT {_COLS}, now(), NULL, true, {_HASH} FROM public.items AS s "
                f"WHERE NOT EXISTS (SELECT 1 FROM bench.{table} AS c "
                "WHERE c.is_current AND c.id = s.id)"
            ).rowcount
        t2 = time.perf_counter()
    return LimitTiming(
        t2 - t0, phases=(("close", t1 - t0), ("insert", t2 - t1)), rows_written=closed + inserted
    )


#: The types of the compared columns, as the engine's hash sees them.
_NON_KEY_TYPES = {
    "name": "text",
    "category": "text",
    "amount": "numeric(12,2)",
    "active": "boolean",
    "updated_at": "timestamp with time zone",
}


def hash_cost(target_url: str, *, stage: bool) -> tuple[float, float]:
    """Seconds to hash every row of ``public.items`` (or of a TEMP copy of it, the
    cross-DB stage) with the previous hash and with the engine's canonical one:
    ``(previous, canonical)``. Each is ``SELECT max(hash)``, so every row is hashed."""
    from ematix_flow._engine.sql_common import render, row_hash
    from ematix_flow._session import pin

    canonical = render(row_hash("i", [(c, _NON_KEY_TYPES[c]) for c in NON_KEY]))
    previous = _HASH.replace("md5(ROW(", "md5(ROW(i.", 1).replace(", ", ", i.")
    with psycopg.connect(target_url) as conn:
        pin(conn)  # the engine's sessions run pinned; so does this yardstick
        relation = "public.items"
        if stage:
            conn.execute("CREATE TEMP TABLE hash_stage AS SELECT * FROM public.items")
            conn.execute("ANALYZE hash_stage")
            relation = "pg_temp.hash_stage"
        times = []
        for expr in (previous, canonical):
            t0 = time.perf_counter()
            conn.execute(f"SELECT max({expr}) FROM {relation} AS i").fetchone()
            times.append(time.perf_counter() - t0)
        conn.rollback()
    return times[0], times[1]
