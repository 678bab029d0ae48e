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

from ematix_flow._engine.sql_common import BATCH_ID, SqlContext, cols, counts_select

__all__ = ["append_sql"]


def _already_loaded(ctx: SqlContext) -> sql.Composable:
    inc = ctx.incremental_column or ""
    if ctx.append_keys:
        same = [*ctx.append_keys, inc]
        match = sql.SQL(" AND ").join(
            sql.SQL("o.{c} = src.{c}").format(c=sql.Identifier(c)) for c in same
        )
    else:
        match = sql.SQL("o.{c} = src.{c} AND ({o}) IS NOT DISTINCT FROM ({s})").format(
            c=sql.Identifier(inc), o=cols(ctx.names, "o"), s=cols(ctx.names, "src")
        )
    raw = replace(ctx, lookback=None).watermark_value()
    return sql.SQL(
        "\n  WHERE src.{inc} > {wm} OR NOT EXISTS (SELECT 1 FROM {t} AS o WHERE {match})"
    ).format(inc=sql.Identifier(inc), wm=raw, t=ctx.target, match=match)


def append_sql(ctx: SqlContext) -> sql.Composable:
    skip = _already_loaded(ctx) if ctx.incremental_column and ctx.watermark_filter else sql.SQL("")
    ins = sql.SQL(
        "ins AS (\n  INSERT INTO {t} ({c}, _loaded_at, _batch_id)\n"
        "  SELECT {c}, now(), {b} FROM src{skip}\n  RETURNING 1\n)"
    ).format(t=ctx.target, c=cols(ctx.names), b=BATCH_ID, skip=skip)
    return sql.SQL("WITH {},\n{}\n{}").format(
        ctx.src_cte(), ins, counts_select(ctx, {"inserted": sql.SQL("(SELECT count(*) FROM ins)")})
    )
