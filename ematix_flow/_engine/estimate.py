"""What a run would read from its source: the filtered SQL and the planner's estimate
of its rows, without reading them (``EXPLAIN``), for previews of state actions."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql

from ematix_flow._engine.sql_common import WATERMARK_SETTING, render
from ematix_flow._errors import EmatixFlowError

__all__ = ["estimate_source_rows"]


def estimate_source_rows(plan: Any, watermark: str | None) -> tuple[str, int | None]:
    """``(sql, estimated rows)`` of the source ``plan`` reads with ``watermark`` stored
    (``None``: the whole source). The estimate is ``None`` when the source cannot be
    reached."""
    ctx = plan.context
    where = (
        ctx.watermark_where() if ctx.incremental_column and watermark is not None else sql.SQL("")
    )
    query = sql.SQL("SELECT * FROM (\n{}\n) AS q{}").format(sql.SQL(plan.source_sql), where)
    text = render(query)
    try:
        with plan.source_conn_obj.open(autocommit=True, connect_timeout=10) as conn:
            if watermark is not None:
                conn.execute("SELECT set_config(%s, %s, false)", (WATERMARK_SETTING, watermark))
            row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query)).fetchone()
    except (EmatixFlowError, psycopg.Error):
        return text, None
    if row is None:
        return text, None
    doc = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return text, int(doc[0]["Plan"]["Plan Rows"])
