"""The benchmark's data: the 6-column table, its generator and the 10% change generator,
plus the engine-side table classes the worker syncs into.

Everything is generated in SQL inside the server (no rows cross Python), so building
1,000,000 rows takes a few seconds.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

__all__ = [
    "COLUMNS",
    "NON_KEY",
    "SOURCE_QUERY",
    "change_ten_percent",
    "create_items",
    "generated_query",
]

COLUMNS = ("id", "name", "category", "amount", "active", "updated_at")
NON_KEY = COLUMNS[1:]

#: Column definitions of the source table and of the hand-written targets.
COLUMN_DDL = (
    "id bigint NOT NULL, name text NOT NULL, category text, amount numeric(12,2), "
    "active boolean, updated_at timestamptz"
)

_ROW_EXPR = (
    "g AS id, 'name-' || g AS name, "
    "CASE WHEN mod(g, 50) = 0 THEN NULL ELSE 'category-' || mod(g, 97) END AS category, "
    "round(mod(g, 100000) / 7.0, 2)::numeric(12,2) AS amount, mod(g, 3) = 0 AS active, "
    "timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' AS updated_at"
)

#: The engine's source query on the ``items`` table (in either database).
SOURCE_QUERY = "SELECT id, name, category, amount, active, updated_at FROM public.items"


def generated_query(rows: int) -> str:
    """A source query producing ``rows`` rows with no table behind it (RSS runs)."""
    return f"SELECT {_ROW_EXPR} FROM generate_series(1, {int(rows)}) AS g"


def create_items(conn: psycopg.Connection[Any], rows: int) -> None:
    """(Re)create ``public.items`` with ``rows`` generated rows, vacuumed and analyzed."""
    conn.execute("DROP TABLE IF EXISTS public.items")
    conn.execute(f"CREATE TABLE public.items ({COLUMN_DDL}, PRIMARY KEY (id))")
    conn.execute(
        sql.SQL("INSERT INTO public.items SELECT {} FROM generate_series(1, %s) AS g").format(
            sql.SQL(_ROW_EXPR)
        ),
        (rows,),
    )
    conn.execute("VACUUM ANALYZE public.items")


def change_ten_percent(conn: psycopg.Connection[Any], round_no: int) -> int:
    """Change every compared column of a different 10% of the rows each round.

    Round ``r`` touches the keys with ``id % 10 = r % 10``, so after a target caught up
    with round ``r - 1``, exactly 10% of its rows differ from the source. ``updated_at``
    moves ``r`` years on, past every value of earlier rounds (N seconds span under a
    year up to N = 31M), so a target reading ``incremental_column="updated_at"`` above
    its watermark reads exactly the changed rows.
    """
    cur = conn.execute(
        "UPDATE public.items SET amount = amount + %(r)s, active = NOT active, "
        "updated_at = updated_at + %(r)s * interval '1 year' WHERE mod(id, 10) = %(m)s",
        {"r": round_no, "m": round_no % 10},
    )
    conn.execute("VACUUM ANALYZE public.items")
    return cur.rowcount
