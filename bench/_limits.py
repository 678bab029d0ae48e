"""The yardsticks the engine is measured against, written by hand for this one table.

- :func:`copy_merge` — the physical limit of a cross-DB merge: a raw binary COPY pipe
  from the source database into a temporary stage in the target database (COPY data
  coalesced into ~128 KiB writes), then one ``INSERT … ON CONFLICT … DO UPDATE … WHERE
  … IS DISTINCT FROM``, one transaction.
- :func:`hand_merge` — the floor of a same-DB merge: the bare ``INSERT … SELECT … ON
  CONFLICT … DO UPDATE … WHERE … IS DISTINCT FROM`` from the source table, one
  statement.
- :func:`hand_scd2` — hand-written same-DB SCD2: ``md5(ROW(…)::text)`` row hash of the
  compared columns, one UPDATE closing changed current versions, one INSERT of new
  versions (changed and new keys; anti-join by ``NOT EXISTS``), one transaction; on a
  table whose only index is the partial unique index on the key ``WHERE is_current``
  (:func:`create_limit_scd2_target`), or, with ``primary_key=True``, with the engine's
  ``(id, valid_from)`` primary key besides.

Initial loads into an empty table (each creates its table in its own transaction):

- :func:`bare_copy` — cross-DB: the binary COPY pipe straight into a fresh table with
  the key of the engine's merge target;
- :func:`bare_insert` — same-DB: one ``INSERT … SELECT`` into a fresh table with that
  key;
- :func:`bare_insert_scd2` — same-DB: one ``INSERT … SELECT`` into a fresh table built by
  the engine's own DDL for an SCD2 target (:func:`engine_ddl`: same columns, same
  indexes, in the order the engine builds them), the framework columns filled as the
  engine fills them on a first load.

Each returns seconds measured around the whole unit of work (connect → commit).

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
    "EngineDdl",
    "LimitTiming",
    "bare_copy",
    "bare_insert",
    "bare_insert_scd2",
    "canonical_hash",
    "copy_merge",
    "create_limit_merge_target",
    "create_limit_scd2_target",
    "engine_ddl",
    "hand_merge",
    "hand_scd2",
    "hash_cost",
    "scd2_target_ddl",
]

COPY_BUFFER = 128 * 1024

_COLS = ", ".join(COLUMNS)
_SETS = ", ".join(f"{c} = EXCLUDED.{c}" for c in NON_KEY)
_T_NON_KEY = ", ".join(f"t.{c}" for c in NON_KEY)
_X_NON_KEY = ", ".join(f"EXCLUDED.{c}" for c in NON_KEY)
#: The engine's previous row hash (before the canonical one), for :func:`hash_cost`.
_HASH = (
    "md5(ROW("
    + ", ".join(f"{c} AT TIME ZONE 'UTC'" if c == "updated_at" else c for c in NON_KEY)
    + ")::text)"
)
#: The hand-written SCD2's row hash: ``md5(ROW(s.<compare cols>)::text)``.
_HAND_HASH = "md5(ROW(" + ", ".join(f"s.{c}" for c in NON_KEY) + ")::text)"
_S_COLS = ", ".join(f"s.{c}" for c in COLUMNS)


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


def _pipe(src: psycopg.Connection, tgt: psycopg.Connection, into: str) -> None:
    """The binary COPY of the source query into ``into`` (a table of the target),
    coalesced into ~``COPY_BUFFER`` writes."""
    with (
        src.cursor().copy(f"COPY ({SOURCE_QUERY}) TO STDOUT (FORMAT BINARY)") as cin,
        tgt.cursor().copy(f"COPY {into} ({_COLS}) FROM STDIN (FORMAT BINARY)") as cout,
    ):
        buf = bytearray()
        for block in cin:
            buf += block
            if len(buf) >= COPY_BUFFER:
                cout.write(buf)
                buf = bytearray()  # a fresh buffer: write() may still hold the old
        if buf:
            cout.write(buf)


def copy_merge(source_url: str, target_url: str, table: str) -> LimitTiming:
    """Binary COPY pipe source → temp stage, then one upsert into ``bench.<table>``."""
    t0 = time.perf_counter()
    with psycopg.connect(source_url) as src, psycopg.connect(target_url) as tgt:
        with tgt.transaction():
            tgt.execute(f"CREATE TEMP TABLE stage ({COLUMN_DDL}) ON COMMIT DROP")
            _pipe(src, tgt, "stage")
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


def bare_copy(source_url: str, target_url: str, table: str) -> LimitTiming:
    """A first cross-DB load at COPY speed: ``bench.<table>`` created with the merge
    target's key, then the binary COPY pipe straight into it, one transaction."""
    t0 = time.perf_counter()
    with psycopg.connect(source_url) as src, psycopg.connect(target_url) as tgt:
        with tgt.transaction():
            tgt.execute(f"CREATE TABLE bench.{table} ({COLUMN_DDL}, PRIMARY KEY (id))")
            _pipe(src, tgt, f"bench.{table}")
            written = tgt.execute(f"SELECT count(*) FROM bench.{table}").fetchone()[0]
        t1 = time.perf_counter()
    return LimitTiming(t1 - t0, phases=(("copy", t1 - t0),), rows_written=written)


def bare_insert(target_url: str, table: str) -> LimitTiming:
    """A first same-DB load: ``bench.<table>`` created with the merge target's key,
    then one ``INSERT … SELECT`` from the source table, one transaction."""
    t0 = time.perf_counter()
    with psycopg.connect(target_url) as tgt:
        with tgt.transaction():
            tgt.execute(f"CREATE TABLE bench.{table} ({COLUMN_DDL}, PRIMARY KEY (id))")
            written = tgt.execute(f"INSERT INTO bench.{table} ({_COLS}) {SOURCE_QUERY}").rowcount
        t1 = time.perf_counter()
    return LimitTiming(t1 - t0, phases=(("insert", t1 - t0),), rows_written=written)


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


def scd2_target_ddl(table: str, *, primary_key: bool = False) -> list[str]:
    """The hand-written SCD2's table: history rows, at most one current version per key,
    enforced and served by the partial unique index on ``id WHERE is_current`` — its only
    index. ``primary_key=True`` adds the engine's ``PRIMARY KEY (id, valid_from)``."""
    pk = ", PRIMARY KEY (id, valid_from)" if primary_key else ""
    return [
        f"CREATE TABLE bench.{table} ({COLUMN_DDL}, valid_from timestamptz NOT NULL, "
        f"valid_to timestamptz, is_current boolean NOT NULL, row_hash text NOT NULL{pk})",
        f"CREATE UNIQUE INDEX ON bench.{table} (id) WHERE is_current",
    ]


def create_limit_scd2_target(
    tgt: psycopg.Connection, table: str, *, primary_key: bool = False
) -> None:
    """(Re)create the table of :func:`scd2_target_ddl`, empty."""
    tgt.execute("CREATE SCHEMA IF NOT EXISTS bench")
    tgt.execute(f"DROP TABLE IF EXISTS bench.{table}")
    for stmt in scd2_target_ddl(table, primary_key=primary_key):
        tgt.execute(stmt)


def hand_scd2(target_url: str, table: str, *, row_hash: str = _HAND_HASH) -> LimitTiming:
    """Same-DB SCD2 from ``public.items`` (alias ``s``) into ``bench.<table>``: close,
    then insert. ``row_hash``: the hash expression (``md5(ROW(s.…)::text)``)."""
    t0 = time.perf_counter()
    with psycopg.connect(target_url) as tgt:
        with tgt.transaction():
            closed = tgt.execute(
                f"UPDATE bench.{table} AS t SET is_current = false, valid_to = now() "
                "FROM public.items AS s "
                f"WHERE t.id = s.id AND t.is_current AND t.row_hash <> {row_hash}"
            ).rowcount
            t1 = time.perf_counter()
            inserted = tgt.execute(
                f"INSERT INTO bench.{table} ({_COLS}, valid_from, valid_to, is_current, "
                f"row_hash) SELECT {_S_COLS}, now(), NULL, true, {row_hash} "
                f"FROM public.items AS s WHERE NOT EXISTS (SELECT 1 FROM bench.{table} AS c "
                "WHERE c.id = s.id AND c.is_current)"
            ).rowcount
        t2 = time.perf_counter()
    return LimitTiming(
        t2 - t0, phases=(("close", t1 - t0), ("insert", t2 - t1)), rows_written=closed + inserted
    )


def canonical_hash(alias: str) -> str:
    """The engine's canonical row hash of the compared columns of ``alias``."""
    from ematix_flow._engine.sql_common import render, row_hash

    return render(row_hash(alias, [(c, _NON_KEY_TYPES[c]) for c in NON_KEY]))


@dataclass(frozen=True)
class EngineDdl:
    """The engine's DDL for a target created by its run: the statements before its first
    data statement (``before``) and those after it (``after``: indexes built after the
    load, if the engine does that)."""

    before: tuple[str, ...]
    after: tuple[str, ...]


_DDL_VERBS = ("ALTER TABLE", "CREATE")


def engine_ddl(target_url: str, table: str, mode: str) -> EngineDdl:
    """What the engine's plan creates for ``bench.<table>`` (absent) in ``mode``, read
    from its plan of a same-DB sync from ``public.items``."""
    from bench._worker import items_table
    from ematix_flow import _core
    from ematix_flow._engine import TargetOptions, plan
    from ematix_flow.source import Source

    conn = _core.connect(target_url)
    spec = items_table(table).__table_spec__
    steps = plan(
        TargetOptions(table=spec, mode=mode, keys=("id",)),
        Source.postgres_query(conn, SOURCE_QUERY),
        conn,
        pipeline="bench_yardstick",
    ).steps
    # The first statement that writes rows (a staged plan's "data", a first load's
    # "load") is the one the yardstick replaces; the keys and indexes a first load
    # builds after it are "load" steps too, told apart by their DDL.
    first = next(i for i, s in enumerate(steps) if s.kind in ("data", "load"))
    return EngineDdl(
        before=tuple(s.sql for s in steps[:first] if s.kind == "ddl"),
        after=tuple(
            s.sql
            for s in steps[first + 1 :]
            if s.kind in ("ddl", "load") and s.sql.lstrip().upper().startswith(_DDL_VERBS)
        ),
    )


def bare_insert_scd2(target_url: str, table: str, ddl: EngineDdl) -> LimitTiming:
    """A first same-DB SCD2 load: ``bench.<table>`` built by the engine's DDL, then one
    ``INSERT … SELECT`` with the framework columns filled as on a first load (valid from
    now, open, current, the engine's canonical row hash), one transaction."""
    from ematix_flow._session import pin

    canonical = canonical_hash("s")
    t0 = time.perf_counter()
    with psycopg.connect(target_url) as tgt:
        pin(tgt)  # the engine's sessions run pinned (the hash reads no session setting)
        with tgt.transaction():
            for stmt in ddl.before:
                tgt.execute(stmt)
            written = tgt.execute(
                f"INSERT INTO bench.{table} ({_COLS}, valid_from, valid_to, is_current, "
                f"row_hash) SELECT {_S_COLS}, now(), NULL, true, {canonical} "
                "FROM public.items AS s"
            ).rowcount
            for stmt in ddl.after:
                tgt.execute(stmt)
        t1 = time.perf_counter()
    return LimitTiming(t1 - t0, phases=(("insert", t1 - t0),), rows_written=written)


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
    from ematix_flow._session import pin

    canonical = canonical_hash("i")
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
