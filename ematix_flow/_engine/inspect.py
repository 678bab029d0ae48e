"""What the planner reads from the databases: the target's facts, the source's columns.

Kept to few round trips: one reflection (the schema layer's single query), one query
for the target's indexes, one for the watermark; on the source, one ``LIMIT 0`` describe
plus one ``pg_type`` lookup. The executor calls these inside its transaction, after
taking the advisory lock, so the plan it runs matches the database it writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from ematix_flow._engine import state
from ematix_flow._tablespec import TableSpec

__all__ = ["SourceColumn", "TargetFacts", "describe_source", "inspect_target"]

#: OIDs below this are built into PostgreSQL: identical in every database.
FIRST_USER_OID = 16384


@dataclass(frozen=True)
class TargetFacts:
    reflected: TableSpec | None
    #: Column sets of the table's non-partial unique indexes (constraints included).
    unique_sets: frozenset[frozenset[str]]
    index_names: frozenset[str]
    watermark: str | None
    #: ``pg_class.reltuples``: -1 never analyzed, 0 analyzed while empty (None: no table).
    reltuples: float | None = None


@dataclass(frozen=True)
class SourceColumn:
    name: str
    oid: int
    type: str  # format_type(oid, NULL)

    @property
    def builtin(self) -> bool:
        return self.oid < FIRST_USER_OID


_INDEXES = """
SELECT i.relname, x.indisunique AND x.indpred IS NULL AND x.indexprs IS NULL,
       array_agg(a.attname::text ORDER BY k.ord)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
WHERE x.indrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))
GROUP BY i.relname, x.indisunique, x.indpred IS NULL, x.indexprs IS NULL
"""


def inspect_target(
    conn: psycopg.Connection[Any],
    table: TableSpec,
    *,
    state_schema: str,
    pipeline: str,
    incremental: bool,
) -> TargetFacts:
    from ematix_flow._schema import reflect_table

    reflected = reflect_table(conn, table.schema, table.name)
    unique: set[frozenset[str]] = set()
    names: set[str] = set()
    reltuples = None
    if reflected is not None:
        with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
            row = cur.execute(
                "SELECT reltuples FROM pg_class "
                "WHERE oid = to_regclass(format('%%I.%%I', %s::text, %s::text))",
                (table.schema, table.name),
            ).fetchone()
            reltuples = None if row is None else float(row[0])
            for name, usable, columns in cur.execute(_INDEXES, (table.schema, table.name)):
                names.add(name)
                if usable:
                    unique.add(frozenset(columns))
    watermark = None
    if incremental and state.state_exists(conn, state_schema):
        watermark = state.read_watermark(conn, state_schema, pipeline, table.qualified_name)
    return TargetFacts(reflected, frozenset(unique), frozenset(names), watermark, reltuples)


def describe_source(conn: psycopg.Connection[Any], source_sql: str) -> tuple[SourceColumn, ...]:
    """The columns of ``source_sql`` (names and types), without reading any row."""
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        # No parameters: a "%" in the user's SQL stays a "%".
        cur.execute(f"SELECT * FROM (\n{source_sql}\n) AS q LIMIT 0")
        desc = cur.description or []
        oids = [d.type_code for d in desc]
        types = dict(
            cur.execute(
                "SELECT oid::int, format_type(oid, NULL) FROM pg_type WHERE oid = ANY(%s)",
                (oids,),
            ).fetchall()
        )
    return tuple(SourceColumn(d.name, d.type_code, types.get(d.type_code, "text")) for d in desc)


def describe(
    conn: psycopg.Connection[Any], source: Any, table: TableSpec
) -> tuple[SourceColumn, ...]:
    """The source's columns named as the target's: a table source is described as the
    raw table and mapped through ``column_map`` (a missing column is simply absent, so
    the planner can name it); a query source is described as written."""
    if source.kind != "table":
        return describe_source(conn, source.select_sql(table))
    from psycopg import sql

    raw = describe_source(
        conn,
        sql.SQL("SELECT * FROM {}")
        .format(sql.Identifier(source.schema, source.table))
        .as_string(None),
    )
    by_name = {c.name: c for c in raw}
    out = []
    for col in table.declared_columns:
        found = by_name.get(source.source_column(col.name))
        if found is not None:
            out.append(SourceColumn(col.name, found.oid, found.type))
    return tuple(out)
