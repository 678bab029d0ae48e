"""The state kept in each target database: run history, watermarks, schema version.

Schema ``ematix_flow`` by default (``EMATIX_FLOW_STATE_SCHEMA`` overrides it). It is
created on first use under an advisory lock, so concurrent first runs cannot race on
``CREATE``; it is versioned in ``schema_version`` and never dropped. The engine writes a
target's watermark and its ``run_history`` row in the same transaction as its data;
only ``skipped``, ``failed`` and ``interrupted`` rows are written in a transaction of
their own (the data transaction either never started or was rolled back).

Run-history ``status`` is one of ``succeeded``, ``failed``, ``skipped``, ``not_run``
(an earlier target of the run failed, so this one was not attempted) and
``interrupted`` (Ctrl-C stopped the run while it wrote this target: rolled back). Only
a ``succeeded`` row carries row counts: a failed or interrupted target's work was rolled
back, so it records none.

Every row of one fire of a pipeline — all its targets — carries the same ``run_id``
(version 5), set by :func:`run_scope` around the fire: ``flow history -n N`` counts
runs, not rows. Rows recorded outside a fire (an ad-hoc ``sync()``, a state reset, a
row of an earlier version) have none and count as a run each.

Watermarks are kept with their column and the SQL type they are compared in
(``column_type``, version 2). The value is the text of that type as a pinned session
prints it (:mod:`ematix_flow._session`: ISO dates, UTC), so every run reads back exactly
the value it stored. A version-1 value (no ``column_type``) was printed under whatever
settings its target session had; :func:`canonical_legacy_watermark` reads it back under
those settings once, and the next successful run stores it in the canonical form.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

__all__ = [
    "STATE_VERSION",
    "HistoryRow",
    "StoredWatermark",
    "TargetState",
    "backfill_done",
    "batch_recorded",
    "canonical_legacy_watermark",
    "canonical_value",
    "current_run_id",
    "ensure_state",
    "lock_key",
    "read_history",
    "read_last_run_outcome",
    "read_row_hash_version",
    "read_target_state",
    "read_watermark",
    "record_row_hash_sql",
    "record_run_sql",
    "reset_watermark",
    "run_scope",
    "state_schema",
    "upsert_watermark_sql",
]

STATE_VERSION = 5
#: First key of every advisory lock the engine takes (the second is per pipeline/target).
LOCK_NAMESPACE = 0x0E3A71F
_CREATE_LOCK = 0x0E3A720


_RUN_ID: ContextVar[str | None] = ContextVar("ematix_flow_run_id", default=None)


@contextmanager
def run_scope() -> Iterator[str]:
    """One fire of a pipeline: every history row recorded inside carries the same new
    ``run_id``."""
    token = _RUN_ID.set(str(uuid.uuid4()))
    try:
        yield str(_RUN_ID.get())
    finally:
        _RUN_ID.reset(token)


def current_run_id() -> str | None:
    """The ``run_id`` of the surrounding :func:`run_scope` (``None`` outside one)."""
    return _RUN_ID.get()


def state_schema() -> str:
    return os.environ.get("EMATIX_FLOW_STATE_SCHEMA") or "ematix_flow"


def lock_key(pipeline: str, target: str) -> str:
    """The text hashed (``hashtext``) into the second advisory-lock key."""
    return f"{pipeline}\x1f{target}"


def _ddl(schema: str) -> list[tuple[sql.Composed, sql.Composed]]:
    """``(statement, needed)``: each statement runs only when its ``needed`` query says
    so, so that a state already current needs no privilege beyond writing its rows
    (``CREATE … IF NOT EXISTS`` checks CREATE privilege even when the object exists)."""
    s = sql.Identifier(schema)

    def missing_table(name: str) -> sql.Composed:
        return sql.SQL("SELECT to_regclass({}) IS NULL").format(
            sql.Literal(f"{_quote(schema)}.{name}")
        )

    def missing_column(table: str, column: str) -> sql.Composed:
        return sql.SQL(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass({}) "
            "AND attname = {} AND NOT attisdropped)"
        ).format(sql.Literal(f"{_quote(schema)}.{table}"), sql.Literal(column))

    always = sql.SQL("SELECT true")
    return [
        (
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s),
            sql.SQL("SELECT to_regnamespace({}) IS NULL").format(sql.Literal(_quote(schema))),
        ),
        (
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_version ("
                "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(s),
            missing_table("schema_version"),
        ),
        (
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.run_history ("
                "id bigserial PRIMARY KEY, pipeline text NOT NULL, target text NOT NULL, "
                "mode text, status text NOT NULL, path text, batch_id uuid, "
                "started_at timestamptz NOT NULL, finished_at timestamptz NOT NULL, "
                "duration_s double precision, rows_inserted bigint, rows_updated bigint, "
                "rows_deleted bigint, rows_unchanged bigint, error text)"
            ).format(s),
            missing_table("run_history"),
        ),
        (
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS run_history_pipeline_started "
                "ON {}.run_history (pipeline, started_at DESC)"
            ).format(s),
            missing_table("run_history_pipeline_started"),
        ),
        (
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.watermarks ("
                "pipeline text NOT NULL, target text NOT NULL, column_name text NOT NULL, "
                "value text, batch_id uuid, updated_at timestamptz NOT NULL, "
                "PRIMARY KEY (pipeline, target))"
            ).format(s),
            missing_table("watermarks"),
        ),
        # version 2: the type a watermark is compared in
        (
            sql.SQL("ALTER TABLE {}.watermarks ADD COLUMN IF NOT EXISTS column_type text").format(
                s
            ),
            missing_column("watermarks", "column_type"),
        ),
        # version 3: versions expired by ttl
        (
            sql.SQL(
                "ALTER TABLE {}.run_history ADD COLUMN IF NOT EXISTS rows_expired bigint"
            ).format(s),
            missing_column("run_history", "rows_expired"),
        ),
        # version 4: what the row records (run, full_refresh, backfill, reset) and, for a
        # backfill step, its window; the row-hash version of each target table
        (
            sql.SQL(
                "ALTER TABLE {}.run_history ADD COLUMN IF NOT EXISTS action text, "
                "ADD COLUMN IF NOT EXISTS window_from text, "
                "ADD COLUMN IF NOT EXISTS window_to text"
            ).format(s),
            missing_column("run_history", "window_to"),
        ),
        (
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.target_tables (target text PRIMARY KEY, "
                "row_hash_version integer NOT NULL, updated_at timestamptz NOT NULL "
                "DEFAULT now())"
            ).format(s),
            missing_table("target_tables"),
        ),
        # version 5: the fire of the pipeline a row belongs to (every target of one run)
        (
            sql.SQL("ALTER TABLE {}.run_history ADD COLUMN IF NOT EXISTS run_id uuid").format(s),
            missing_column("run_history", "run_id"),
        ),
        (
            sql.SQL(
                "INSERT INTO {}.schema_version (version) VALUES ({}) ON CONFLICT DO NOTHING"
            ).format(s, sql.Literal(STATE_VERSION)),
            always,
        ),
    ]


def _quote(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def read_row_hash_version(conn: psycopg.Connection[Any], schema: str, target: str) -> int | None:
    """The row-hash version recorded for ``target`` (None: not recorded)."""
    row = conn.execute(
        sql.SQL("SELECT row_hash_version FROM {}.target_tables WHERE target = %s").format(
            sql.Identifier(schema)
        ),
        (target,),
    ).fetchone()
    return None if row is None else int(row[0])


def record_row_hash_sql(schema: str, target: str, version: int) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {}.target_tables (target, row_hash_version) VALUES ({}, {}) "
        "ON CONFLICT (target) DO UPDATE SET row_hash_version = EXCLUDED.row_hash_version, "
        "updated_at = now()"
    ).format(sql.Identifier(schema), sql.Literal(target), sql.Literal(version))


def state_exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    row = conn.execute(
        "SELECT to_regclass(format('%%I.schema_version', %s::text)) IS NOT NULL "
        "AND to_regclass(format('%%I.watermarks', %s::text)) IS NOT NULL",
        (schema, schema),
    ).fetchone()
    return bool(row and row[0])


def _state_current(conn: psycopg.Connection[Any], schema: str) -> bool:
    if not state_exists(conn, schema):
        return False
    row = conn.execute(
        sql.SQL("SELECT max(version) FROM {}.schema_version").format(sql.Identifier(schema))
    ).fetchone()
    return bool(row and row[0] is not None and row[0] >= STATE_VERSION)


def ensure_state(conn: psycopg.Connection[Any], schema: str | None = None) -> None:
    """Create the state schema if missing, in its own committed transaction.

    ``conn`` must not be inside a transaction the caller still needs.
    """
    schema = schema or state_schema()
    with conn.transaction():
        if _state_current(conn, schema):
            return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
        if _state_current(conn, schema):
            return
        for stmt, needed in _ddl(schema):
            row = conn.execute(needed).fetchone()
            if row and row[0]:
                conn.execute(stmt)


@dataclass(frozen=True)
class StoredWatermark:
    """A target's stored watermark: its column, the type it is compared in (``None``
    for a version-1 row), and the value as that type's canonical text (``None``: the
    source had no value yet)."""

    column: str
    column_type: str | None
    value: str | None


def read_watermark(
    conn: psycopg.Connection[Any], schema: str, pipeline: str, target: str
) -> StoredWatermark | None:
    row = conn.execute(
        sql.SQL(
            "SELECT column_name, column_type, value FROM {}.watermarks "
            "WHERE pipeline = %s AND target = %s"
        ).format(sql.Identifier(schema)),
        (pipeline, target),
    ).fetchone()
    return None if row is None else StoredWatermark(*row)


#: Settings that decide how a date/time value is printed and read back.
_TEXT_SETTINGS = ("DateStyle", "TimeZone", "IntervalStyle")


def canonical_legacy_watermark(conn: psycopg.Connection[Any], value: str, type_sql: str) -> str:
    """A version-1 watermark (printed under the target session's own settings, before
    sessions were pinned) as the canonical text of ``type_sql``.

    It is read back under the settings this session started with (``pg_settings.
    reset_val``: the database's, the role's and the client's), which are the ones it
    was printed under unless they changed since, then printed under the pinned ones.
    """
    from ematix_flow._session import PINNED

    pinned = dict(PINNED)
    type_ = sql.SQL(type_sql)
    with conn.transaction():
        conn.execute(
            "SELECT set_config(name, reset_val, true) FROM pg_settings WHERE name = ANY(%s)",
            (list(_TEXT_SETTINGS),),
        )
        # Binary results: the typed value reaches Python without being printed.
        with conn.cursor(binary=True) as cur:
            row = cur.execute(
                sql.SQL("SELECT CAST(CAST(%s AS text) AS {})").format(type_), (value,)
            ).fetchone()
        for name in _TEXT_SETTINGS:
            conn.execute("SELECT set_config(%s, %s, true)", (name, pinned[name]))
        back = conn.execute(
            sql.SQL("SELECT CAST(CAST(%b AS {}) AS text)").format(type_),
            (None if row is None else row[0],),
        ).fetchone()
    return value if back is None or back[0] is None else str(back[0])


def upsert_watermark_sql(schema: str) -> sql.Composed:
    """Parameters: pipeline, target, column, column_type, value (canonical text), batch_id."""
    return sql.SQL(
        "INSERT INTO {}.watermarks AS w (pipeline, target, column_name, column_type, value, "
        "batch_id, updated_at) VALUES (%(pipeline)s, %(target)s, %(column)s, "
        "%(column_type)s, %(watermark)s, %(batch_id)s, now()) ON CONFLICT (pipeline, target) "
        "DO UPDATE SET column_name = EXCLUDED.column_name, column_type = "
        "EXCLUDED.column_type, value = EXCLUDED.value, batch_id = EXCLUDED.batch_id, "
        "updated_at = EXCLUDED.updated_at"
    ).format(sql.Identifier(schema))


def record_run_sql(schema: str) -> sql.Composed:
    """Parameters: the columns of ``run_history`` except ``id`` (``run_id``: the
    surrounding :func:`run_scope`'s, :func:`current_run_id`)."""
    return sql.SQL(
        "INSERT INTO {}.run_history (pipeline, target, mode, status, path, batch_id, "
        "started_at, finished_at, duration_s, rows_inserted, rows_updated, rows_deleted, "
        "rows_unchanged, rows_expired, error, action, window_from, window_to, run_id) VALUES "
        "(%(pipeline)s, %(target)s, %(mode)s, %(status)s, %(path)s, %(batch_id)s, "
        "%(started_at)s, %(finished_at)s, %(duration_s)s, %(rows_inserted)s, "
        "%(rows_updated)s, %(rows_deleted)s, %(rows_unchanged)s, %(rows_expired)s, "
        "%(error)s, %(action)s, %(window_from)s, %(window_to)s, %(run_id)s)"
    ).format(sql.Identifier(schema))


@dataclass(frozen=True)
class HistoryRow:
    pipeline: str
    target: str
    mode: str | None
    status: str
    path: str | None
    batch_id: str | None
    started_at: datetime
    finished_at: datetime
    duration_s: float | None
    rows_inserted: int | None
    rows_updated: int | None
    rows_deleted: int | None
    rows_unchanged: int | None
    error: str | None
    rows_expired: int | None = None
    action: str | None = None
    #: The fire of the pipeline this row belongs to (``None``: a run of its own).
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["started_at"] = self.started_at.isoformat()
        d["finished_at"] = self.finished_at.isoformat()
        return d


_HISTORY_COLS = (
    "pipeline, target, mode, status, path, batch_id::text, started_at, finished_at, "
    "duration_s, rows_inserted, rows_updated, rows_deleted, rows_unchanged, error, "
    "rows_expired, coalesce(action, 'run')"
)


def _run_key(schema: str, conn: psycopg.Connection[Any]) -> sql.Composable:
    """The SQL naming a row's run: its ``run_id``, or the row itself when it has none
    (or the state predates version 5)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
        "to_regclass(format('%%I.run_history', %s::text)) AND attname = 'run_id' "
        "AND NOT attisdropped)",
        (schema,),
    ).fetchone()
    if row and row[0]:
        return sql.SQL("coalesce(run_id::text, 'row ' || id)")
    return sql.SQL("'row ' || id")


def read_history(
    conn: psycopg.Connection[Any], schema: str, pipeline: str, limit: int = 20
) -> list[HistoryRow]:
    """The rows of the ``limit`` most recent runs of ``pipeline`` (a run: one fire, every
    target it wrote), newest run first, each run's rows in the order they started;
    empty when no state exists."""
    if not state_exists(conn, schema):
        return []
    key = _run_key(schema, conn)
    rows = conn.execute(
        sql.SQL(
            "WITH runs AS (SELECT {key} AS run, min(started_at) AS run_started "
            "FROM {s}.run_history WHERE pipeline = %(p)s GROUP BY 1 "
            "ORDER BY run_started DESC, run DESC LIMIT %(n)s) "
            "SELECT {cols}, CASE WHEN runs.run LIKE 'row %%' THEN NULL ELSE runs.run END "
            "FROM {s}.run_history h JOIN runs ON {key} = runs.run WHERE h.pipeline = %(p)s "
            "ORDER BY runs.run_started DESC, runs.run DESC, h.started_at, h.id"
        ).format(key=key, s=sql.Identifier(schema), cols=sql.SQL(_HISTORY_COLS)),
        {"p": pipeline, "n": limit},
    ).fetchall()
    return [HistoryRow(*r) for r in rows]


def read_last_run_outcome(
    conn: psycopg.Connection[Any], schema: str, pipeline: str
) -> tuple[datetime, datetime, str | None, bool] | None:
    """The latest scheduled-kind run (``run`` or ``full_refresh``, not skipped) of
    ``pipeline``: ``(started, last_started, run_id, failed)`` — when its first and last
    rows here started, its run id (``None`` for a row of its own), and whether a target
    of it did not succeed (failed, or not run after a failure). ``None``: no such run."""
    if not state_exists(conn, schema):
        return None
    key = _run_key(schema, conn)
    row = conn.execute(
        sql.SQL(
            "WITH h AS (SELECT {key} AS run, started_at, status FROM {s}.run_history "
            "WHERE pipeline = %(p)s AND status <> 'skipped' "
            "AND coalesce(action, 'run') IN ('run', 'full_refresh')), "
            "last AS (SELECT run FROM h ORDER BY started_at DESC LIMIT 1) "
            "SELECT min(started_at), max(started_at), "
            "CASE WHEN h.run LIKE 'row %%' THEN NULL ELSE h.run END, "
            "bool_or(status <> 'succeeded') FROM h JOIN last USING (run) GROUP BY h.run"
        ).format(key=key, s=sql.Identifier(schema)),
        {"p": pipeline},
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2], bool(row[3]))


def batch_recorded(conn: psycopg.Connection[Any], schema: str, batch_id: str | None) -> bool:
    """Whether a ``run_history`` row carries ``batch_id``: the run with that batch id
    committed (its row commits with its data)."""
    row = conn.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {}.run_history WHERE batch_id = %s)").format(
            sql.Identifier(schema)
        ),
        (batch_id,),
    ).fetchone()
    return bool(row and row[0])


def read_run_since(
    conn: psycopg.Connection[Any], schema: str, pipeline: str, target: str, since: datetime
) -> datetime | None:
    """Start time of the earliest non-skipped run of ``pipeline`` into ``target`` that
    started at or after ``since`` (a schedule slot), or ``None``.

    Read under the target's advisory lock, it tells a ``run-due`` that decided "due"
    before another run of the same slot committed that the slot is already served.
    """
    row = conn.execute(
        sql.SQL(
            "SELECT min(started_at) FROM {}.run_history WHERE pipeline = %s AND target = %s "
            "AND status <> 'skipped' AND started_at >= %s "
            "AND coalesce(action, 'run') IN ('run', 'full_refresh')"
        ).format(sql.Identifier(schema)),
        (pipeline, target, since),
    ).fetchone()
    return None if row is None else row[0]


@dataclass(frozen=True)
class TargetState:
    """What is stored for one target of a pipeline: the watermark and the run counts."""

    pipeline: str
    target: str
    mode: str | None
    incremental_column: str | None
    column_type: str | None
    watermark: str | None
    last_run_at: datetime | None
    last_status: str | None
    last_success_at: datetime | None
    runs: int
    failures: int

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("last_run_at", "last_success_at"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d


def read_target_state(
    conn: psycopg.Connection[Any], schema: str, pipeline: str, target: str, mode: str | None
) -> TargetState:
    """The stored state of one target (empty when no state exists yet)."""
    wm = None
    agg: tuple[Any, ...] = (None, None, None, 0, 0)
    if state_exists(conn, schema):
        wm = read_watermark(conn, schema, pipeline, target)
        row = conn.execute(
            sql.SQL(
                "SELECT max(started_at), (array_agg(status ORDER BY started_at DESC, id DESC))[1],"
                " max(started_at) FILTER (WHERE status = 'succeeded'),"
                " count(*) FILTER (WHERE coalesce(action, 'run') <> 'reset'),"
                " count(*) FILTER (WHERE status = 'failed') "
                "FROM {}.run_history WHERE pipeline = %s AND target = %s"
            ).format(sql.Identifier(schema)),
            (pipeline, target),
        ).fetchone()
        if row is not None:
            agg = tuple(row)
    return TargetState(
        pipeline=pipeline,
        target=target,
        mode=mode,
        incremental_column=wm.column if wm else None,
        column_type=wm.column_type if wm else None,
        watermark=wm.value if wm else None,
        last_run_at=agg[0],
        last_status=agg[1],
        last_success_at=agg[2],
        runs=int(agg[3] or 0),
        failures=int(agg[4] or 0),
    )


def reset_watermark(
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    pipeline: str,
    target: str,
    mode: str | None,
    column: str | None,
    column_type: str | None,
    to: str | None,
) -> tuple[str | None, str | None, str | None]:
    """Clear (``to=None``) or set a target's watermark under its lock, with a ``reset``
    row in its history. ``to`` is parsed in the column's type (the stored one, else
    ``column_type``). Returns ``(before, after, column)``.

    Raises :class:`SyncError` while a run holds the target, and :class:`DefinitionError`
    when ``to`` does not parse or the target has no incremental column.
    """
    from datetime import UTC, datetime

    from ematix_flow._errors import SyncError

    ensure_state(conn, schema)
    lock = (LOCK_NAMESPACE, lock_key(pipeline, target))
    got = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", lock).fetchone()
    if not (got and got[0]):
        raise SyncError(
            f"Pipeline {pipeline}, target {target}: another run holds this target; its "
            "state was not changed. Try again when that run has finished."
        )
    started = datetime.now(UTC)
    try:
        with conn.transaction():
            stored = read_watermark(conn, schema, pipeline, target)
            before = stored.value if stored else None
            col = stored.column if stored else column
            type_sql = (stored.column_type if stored else None) or column_type
            if to is None:
                after = None
                conn.execute(
                    sql.SQL("DELETE FROM {}.watermarks WHERE pipeline = %s AND target = %s").format(
                        sql.Identifier(schema)
                    ),
                    (pipeline, target),
                )
            else:
                after = canonical_value(
                    conn,
                    to,
                    column=col,
                    type_sql=type_sql,
                    where=f"Pipeline {pipeline}, target {target}",
                )
                conn.execute(
                    upsert_watermark_sql(schema),
                    {
                        "pipeline": pipeline,
                        "target": target,
                        "column": col,
                        "column_type": type_sql,
                        "watermark": after,
                        "batch_id": None,
                    },
                )
            conn.execute(
                record_run_sql(schema),
                {
                    "pipeline": pipeline,
                    "target": target,
                    "mode": mode,
                    "status": "succeeded",
                    "path": None,
                    "batch_id": None,
                    "started_at": started,
                    "finished_at": datetime.now(UTC),
                    "duration_s": None,
                    "rows_inserted": None,
                    "rows_updated": None,
                    "rows_deleted": None,
                    "rows_unchanged": None,
                    "rows_expired": None,
                    "error": f"watermark {before!r} → {after!r}",
                    "action": "reset",
                    "window_from": None,
                    "window_to": None,
                    "run_id": current_run_id(),
                },
            )
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", lock)
    return before, after, col


def canonical_value(
    conn: psycopg.Connection[Any],
    value: str,
    *,
    column: str | None,
    type_sql: str | None,
    where: str,
) -> str:
    """``value`` read as the incremental column's type and printed canonically (the
    form watermarks are stored in); a :class:`DefinitionError` when it does not parse."""
    from ematix_flow._errors import DefinitionError

    if column is None or type_sql is None:
        raise DefinitionError(
            f"{where}: there is no incremental column to set a watermark for (no "
            "incremental_column=, nothing stored); --to applies to incremental targets only"
        )
    try:
        with conn.transaction():
            row = conn.execute(
                sql.SQL("SELECT CAST(CAST(%s AS {t}) AS text)").format(t=sql.SQL(type_sql)),
                (value,),
            ).fetchone()
    except psycopg.Error as exc:
        raise DefinitionError(
            f"{where}: {value!r} is not a value of incremental column {column!r} "
            f"({type_sql}): {exc.diag.message_primary or exc}. Give it as that type's text, "
            "e.g. '2026-01-01 00:00:00+00' or 42."
        ) from None
    return str(row[0]) if row else value


def backfill_done(
    conn: psycopg.Connection[Any], schema: str, pipeline: str, target: str, lo: str, hi: str
) -> bool:
    """Whether a backfill window of ``target`` already succeeded (a resumed backfill
    skips it)."""
    if not state_exists(conn, schema):
        return False
    row = conn.execute(
        sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {}.run_history WHERE pipeline = %s AND target = %s "
            "AND action = 'backfill' AND status = 'succeeded' AND window_from = %s "
            "AND window_to = %s)"
        ).format(sql.Identifier(schema)),
        (pipeline, target, lo, hi),
    ).fetchone()
    return bool(row and row[0])
