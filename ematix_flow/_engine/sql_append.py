"""The ``append`` statement: insert every source row, stamped ``_loaded_at``/``_batch_id``.

With a stored watermark the source is read from the watermark on (``>=``, minus
``incremental_lookback``), so rows already loaded come back: a source row whose
incremental value is not above the watermark is skipped when the target already holds
it — the same keys and incremental value when the table declares keys, the same row
otherwise. Rows above the watermark are never looked up.
"""

from __future__ import annotations

from dataclasses import replace

from psycopg import sql

from ematix_flow._engine.sql_common import BATCH_ID, SqlContext, cols, counts_select, row_hash

__all__ = ["append_sql"]


def _already_loaded(ctx: SqlContext) -> sql.Composable:
    """With declared keys: skip a source row whose keys and incremental value the
    target holds (an index probe on the key, through the primary key)."""
    inc = ctx.incremental_column or ""
    same = [*ctx.append_keys, inc]
    match = sql.SQL(" AND ").join(
        sql.SQL("o.{c} = src.{c}").format(c=sql.Identifier(c)) for c in same
    )
    absent = sql.SQL("NOT EXISTS (SELECT 1 FROM {t} AS o WHERE {match})").format(
        t=ctx.target, match=match
    )
    if ctx.skip_loaded_all:
        return sql.SQL("\n  WHERE {}").format(absent)
    raw = replace(ctx, lookback=None).watermark_value(once=True)
    return sql.SQL("\n  WHERE src.{inc} > {wm} OR {absent}").format(
        inc=sql.Identifier(inc), wm=raw, absent=absent
    )


def _keyless_rows(ctx: SqlContext) -> sql.Composable:
    """Without keys a row is identified by its values only, and identical rows may be
    loaded more than once on purpose (two page views of one page in one second). At the
    watermark's value the target may already hold some copies of a row: load only the
    copies beyond those (row_number over the row's hash against the target's count of
    it, one hash join). Rows above the watermark are all new."""
    inc = sql.Identifier(ctx.incremental_column or "")
    typed = [(n, ctx.table.column(n).type.ddl) for n in ctx.names]
    wm = replace(ctx, lookback=None).watermark_value(once=True)
    return sql.SQL(
        "  SELECT {c}, now(), {b} FROM src WHERE src.{inc} > {wm}\n"
        "  UNION ALL\n"
        "  SELECT {sc}, now(), {b} FROM (\n"
        "    SELECT src.*, {hs} AS __ef_k, row_number() OVER (PARTITION BY {hs}) AS __ef_rn\n"
        "    FROM src WHERE src.{inc} = {wm}\n"
        "  ) AS s LEFT JOIN (\n"
        "    SELECT {ho} AS __ef_k, count(*) AS __ef_c FROM {t} AS o WHERE o.{inc} = {wm}\n"
        "    GROUP BY 1\n"
        "  ) AS l ON l.__ef_k = s.__ef_k\n"
        "  WHERE s.__ef_rn > coalesce(l.__ef_c, 0)"
    ).format(
        c=cols(ctx.names),
        sc=cols(ctx.names, "s"),
        b=BATCH_ID,
        inc=inc,
        wm=wm,
        hs=row_hash("src", typed),
        ho=row_hash("o", typed),
        t=ctx.target,
    )


def append_sql(ctx: SqlContext) -> sql.Composable:
    incremental = bool(ctx.incremental_column and ctx.watermark_filter)
    if incremental and not ctx.append_keys:
        rows = _keyless_rows(ctx)
    else:
        skip = _already_loaded(ctx) if incremental else sql.SQL("")
        rows = sql.SQL("  SELECT {c}, now(), {b} FROM src{skip}").format(
            c=cols(ctx.names), b=BATCH_ID, skip=skip
        )
    ins = sql.SQL(
        "ins AS (\n  INSERT INTO {t} ({c}, _loaded_at, _batch_id)\n{rows}\n  RETURNING 1\n)"
    ).format(t=ctx.target, c=cols(ctx.names), rows=rows)
    return sql.SQL("WITH {},\n{}\n{}").format(
        ctx.src_cte(), ins, counts_select(ctx, {"inserted": sql.SQL("(SELECT count(*) FROM ins)")})
    )
