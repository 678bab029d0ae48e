"""The ``append`` statement: insert every source row, stamped ``_loaded_at``/``_batch_id``."""

from __future__ import annotations

from psycopg import sql

from ematix_flow._engine.sql_common import BATCH_ID, SqlContext, cols, counts_select

__all__ = ["append_sql"]


def append_sql(ctx: SqlContext) -> sql.Composable:
    ins = sql.SQL(
        "ins AS (\n  INSERT INTO {t} ({c}, _loaded_at, _batch_id)\n"
        "  SELECT {c}, now(), {b} FROM src\n  RETURNING 1\n)"
    ).format(t=ctx.target, c=cols(ctx.names), b=BATCH_ID)
    return sql.SQL("WITH {},\n{}\n{}").format(
        ctx.src_cte(), ins, counts_select(ctx, {"inserted": sql.SQL("(SELECT count(*) FROM ins)")})
    )
