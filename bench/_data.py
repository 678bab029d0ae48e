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
    "EVENTS_PER_ENTITY",
    "FEATURE_QUERY",
    "NON_KEY",
    "SOURCE_QUERY",
    "change_feature_ten_percent",
    "change_ten_percent",
    "create_events",
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


#: The feature view's fan-in: N events aggregate into N / 10 entities.
EVENTS_PER_ENTITY = 10

#: A feature view over ``public.events``: one row per entity, in the columns of the items
#: table (so the same target declarations serve), aggregated from its events.
FEATURE_QUERY = (
    "SELECT entity_id AS id, 'entity-' || entity_id AS name, min(category) AS category, "
    "sum(amount)::numeric(12,2) AS amount, bool_or(active) AS active, "
    "max(updated_at) AS updated_at FROM public.events GROUP BY entity_id"
)


def create_events(conn: psycopg.Connection[Any], rows: int) -> int:
    """(Re)create ``public.events`` with ``rows`` events of ``rows / EVENTS_PER_ENTITY``
    entities, vacuumed and analyzed; the number of entities."""
    entities = max(1, rows // EVENTS_PER_ENTITY)
    conn.execute("DROP TABLE IF EXISTS public.events")
    conn.execute(
        "CREATE TABLE public.events (event_id bigint PRIMARY KEY, entity_id bigint NOT NULL, "
        "category text, amount numeric(12,2), active boolean, updated_at timestamptz)"
    )
    conn.execute(
        "INSERT INTO public.events SELECT g, mod(g, %(e)s) + 1, "
        "CASE WHEN mod(g, 50) = 0 THEN NULL ELSE 'category-' || mod(g, 97) END, "
        "round(mod(g, 100000) / 7.0, 2)::numeric(12,2), mod(g, 3) = 0, "
        "timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' "
        "FROM generate_series(1, %(n)s) AS g",
        {"e": entities, "n": rows},
    )
    conn.execute("VACUUM ANALYZE public.events")
    return entities


def change_feature_ten_percent(conn: psycopg.Connection[Any], round_no: int) -> int:
    """Change every event of a different 10% of the entities each round (as
    :func:`change_ten_percent` does to items): each of their feature rows changes, and
    its ``updated_at`` (the latest event's) moves past every earlier value. Returns the
    number of entities changed."""
    conn.execute(
        "UPDATE public.events SET amount = amount + %(r)s, active = NOT active, "
        "updated_at = updated_at + %(r)s * interval '1 year' WHERE mod(entity_id, 10) = %(m)s",
        {"r": round_no, "m": round_no % 10},
    )
    conn.execute("VACUUM ANALYZE public.events")
    row = conn.execute(
        "SELECT count(DISTINCT entity_id) FROM public.events WHERE mod(entity_id, 10) = %s",
        (round_no % 10,),
    ).fetchone()
    return int(row[0]) if row else 0
