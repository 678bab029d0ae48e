"""The first load into an empty target: no stage, no upsert.

A target table that this run creates holds no row, so every mode's statement comes
down to inserting every source row with the framework columns filled:

- same-DB: one ``INSERT … SELECT`` from the ``src`` CTE (referenced once, so inlined);
- cross-DB: the same ``SELECT`` runs in the source database — the run time and batch id
  travel as settings (``ematix_flow.now``, ``ematix_flow.batch_id``) — and its rows go
  by binary ``COPY`` straight into the target. Every column is cast to the target's
  built-in type in the source, so the binary rows are the target's own.

Nothing is given up: the table's primary key and unique indexes refuse a key twice in
the batch, and when the load fails for any reason the executor rolls it back and runs
the staged plan instead, whose checks name the key, the row or the column at fault.
"""

from __future__ import annotations

from dataclasses import replace

from psycopg import sql

from ematix_flow._engine.sql_common import BATCH_ID, HASH, VALID_FROM, SqlContext, cast_type

__all__ = ["load_copy_in_sql", "load_copy_out_sql", "load_insert_sql", "loaded_stats_sql"]


def _framework_values(ctx: SqlContext, mode: str) -> list[tuple[str, sql.Composable]]:
    """The framework columns a fresh row gets, per mode (NULL ones are left out)."""
    now = ctx.now()
    if mode == "append":
        return [("_loaded_at", now), ("_batch_id", BATCH_ID)]
    if mode == "scd1":
        return [("row_hash", sql.Identifier(HASH)), ("_updated_at", now)]
    if mode == "scd2":
        return [
            ("valid_from", sql.Identifier(VALID_FROM)),
            ("is_current", sql.SQL("true")),
            ("row_hash", sql.Identifier(HASH)),
        ]
    return []


def _columns(ctx: SqlContext, mode: str) -> tuple[sql.Composable, sql.Composable]:
    values = _framework_values(ctx, mode)
    names = [*ctx.names, *(n for n, _ in values)]
    exprs = [sql.Identifier(n) for n in ctx.names] + [e for _, e in values]
    return sql.SQL(", ").join(map(sql.Identifier, names)), sql.SQL(", ").join(exprs)


def load_insert_sql(ctx: SqlContext, mode: str) -> sql.Composable:
    """Same-DB: every source row into the empty target, one statement."""
    names, exprs = _columns(ctx, mode)
    return sql.SQL("WITH {}\nINSERT INTO {} ({})\nSELECT {} FROM src").format(
        ctx.src_cte(), ctx.target, names, exprs
    )


def load_copy_out_sql(ctx: SqlContext, mode: str) -> sql.Composable:
    """Cross-DB, run in the source database: the rows as the target stores them."""
    remote = replace(ctx, path="same_db", remote=True)
    _, exprs = _columns(remote, mode)
    return sql.SQL("COPY (WITH {}\nSELECT {} FROM src) TO STDOUT (FORMAT BINARY)").format(
        remote.src_cte(), exprs
    )


def load_copy_in_sql(ctx: SqlContext, mode: str) -> sql.Composable:
    names, _ = _columns(ctx, mode)
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(ctx.target, names)


def loaded_stats_sql(ctx: SqlContext) -> sql.Composable:
    """After the load, read from the target: the new watermark, and the rows whose
    incremental value is NULL (refused: a high-water mark cannot place them)."""
    col = ctx.table.column(ctx.incremental_column or "")
    ident = sql.Identifier(col.name)
    return sql.SQL(
        "SELECT max(CAST({c} AS {t}))::text AS watermark, count(*) - count({c}) AS "
        "null_incremental FROM {tbl}"
    ).format(c=ident, t=sql.SQL(cast_type(col)), tbl=ctx.target)
