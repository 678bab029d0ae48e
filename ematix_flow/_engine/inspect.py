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
from ematix_flow._errors import SourceError
from ematix_flow._tablespec import TableSpec

__all__ = [
    "SourceColumn",
    "TargetFacts",
    "describe_source",
    "inspect_target",
    "source_error_message",
]

#: OIDs below this are built into PostgreSQL: identical in every database.
FIRST_USER_OID = 16384
#: The statement that describes a source: the user's SQL between these two. The newline
#: before ")" keeps a trailing "-- comment" in the user's SQL from swallowing it; the
#: head's length maps an error position back into the user's SQL.
_DESCRIBE_HEAD = "SELECT * FROM (\n"
_DESCRIBE_TAIL = "\n) AS q LIMIT 0"
#: SQLSTATE classes of an error in the SQL itself (syntax, unknown names, privileges,
#: data, unsupported features): a run would fail the same way. Any other error (a lost
#: connection, a timeout) says nothing about the SQL.
_SQL_ERROR_CLASSES = ("42", "22", "0A")


@dataclass(frozen=True)
class TargetFacts:
    reflected: TableSpec | None
    #: Column sets of the table's non-partial, non-deferrable unique indexes
    #: (constraints included): those ``ON CONFLICT`` can use.
    unique_sets: frozenset[frozenset[str]]
    index_names: frozenset[str]
    watermark: state.StoredWatermark | None
    #: ``pg_class.reltuples``: -1 never analyzed, 0 analyzed while empty (None: no table).
    reltuples: float | None = None
    #: The row-hash version recorded for the table in the state schema (None: none;
    #: a table built before versions were recorded).
    row_hash_version: int | None = None
    #: An scd2 table holds a current version starting after now() (event time ahead).
    future_valid_from: bool = False
    #: The table's exact row count, when asked for (a full refresh says what goes).
    row_count: int | None = None
    #: The target database's ``server_encoding``.
    encoding: str | None = None
    #: A publication replicates the updates of every table of the target's schema
    #: (``FOR ALL TABLES``, or from PostgreSQL 15 ``FOR TABLES IN SCHEMA``): a table
    #: created there needs a replica identity for its rows to be updated at all.
    publishes_updates: bool = False
    #: The (existing) table is in a publication that replicates updates, and has no
    #: replica identity: no primary key, and REPLICA IDENTITY DEFAULT.
    needs_replica_identity: bool = False


@dataclass(frozen=True)
class SourceColumn:
    name: str
    oid: int
    type: str  # format_type(oid, typmod): the full type, lengths and precisions kept

    @property
    def builtin(self) -> bool:
        return self.oid < FIRST_USER_OID

    @property
    def travels_as_text(self) -> bool:
        """Sent across databases as its text: a type of the source database only (enum,
        domain, …), or an OID alias (``regclass``, ``regtype``, …) whose binary form is
        an OID that means nothing — or something else — in the target database."""
        return not self.builtin or self.type.removesuffix("[]").startswith("reg")


_INDEXES = """
SELECT i.relname,
       x.indisunique AND x.indimmediate AND x.indpred IS NULL AND x.indexprs IS NULL,
       array_agg(a.attname::text ORDER BY k.ord)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
WHERE x.indrelid = to_regclass(format('%%I.%%I', %s::text, %s::text))
GROUP BY i.relname, x.indisunique, x.indimmediate, x.indpred IS NULL, x.indexprs IS NULL
"""


def inspect_target(
    conn: psycopg.Connection[Any],
    table: TableSpec,
    *,
    state_schema: str,
    pipeline: str,
    incremental: bool,
    count_rows: bool = False,
) -> TargetFacts:
    from ematix_flow._schema import reflect_table

    reflected = reflect_table(conn, table.schema, table.name)
    unique: set[frozenset[str]] = set()
    names: set[str] = set()
    reltuples = None
    hash_version = None
    future = False
    row_count = None
    if reflected is not None:
        with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
            row = cur.execute(
                "SELECT c.reltuples FROM pg_class c "
                "WHERE c.oid = to_regclass(format('%%I.%%I', %s::text, %s::text))",
                (table.schema, table.name),
            ).fetchone()
            reltuples = None if row is None else float(row[0])
            for name, usable, columns in cur.execute(_INDEXES, (table.schema, table.name)):
                names.add(name)
                if usable:
                    unique.add(frozenset(columns))
            if {"valid_from", "is_current"} <= set(reflected.column_names):
                from psycopg import sql

                row = cur.execute(
                    sql.SQL(
                        "SELECT EXISTS (SELECT 1 FROM {} WHERE is_current AND valid_from > now())"
                    ).format(sql.Identifier(table.schema, table.name))
                ).fetchone()
                future = bool(row and row[0])
            if count_rows:
                from psycopg import sql as _sql

                got = cur.execute(
                    _sql.SQL("SELECT count(*) FROM {}").format(
                        _sql.Identifier(table.schema, table.name)
                    )
                ).fetchone()
                row_count = int(got[0]) if got else None
    watermark = None
    has_state = state.state_exists(conn, state_schema)
    if reflected is not None and has_state and "row_hash" in reflected.column_names:
        with conn.transaction():  # a state from before the table existed: none recorded
            try:
                hash_version = state.read_row_hash_version(conn, state_schema, table.qualified_name)
            except psycopg.errors.UndefinedTable:
                hash_version = None
    if incremental and has_state:
        watermark = state.read_watermark(conn, state_schema, pipeline, table.qualified_name)
        if watermark is not None and watermark.column_type is None:
            watermark = _canonical_legacy(conn, watermark, table)
    publishes = reflected is None and _publishes_updates(conn, table.schema)
    # only an scd2 table (valid_from, is_current) may lack the key its updates need
    unidentified = (
        reflected is not None
        and not reflected.primary_key
        and {"valid_from", "is_current"} <= set(reflected.column_names)
        and _published_without_identity(conn, table.schema, table.name)
    )
    return TargetFacts(
        reflected,
        frozenset(unique),
        frozenset(names),
        watermark,
        reltuples,
        hash_version,
        future,
        row_count,
        conn.info.parameter_status("server_encoding"),
        publishes,
        unidentified,
    )


def _published_without_identity(conn: psycopg.Connection[Any], schema: str, name: str) -> bool:
    """Whether a publication replicates the updates of this table, which has no replica
    identity (REPLICA IDENTITY DEFAULT and no primary key): its UPDATEs would fail."""
    row = conn.execute(
        "SELECT c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_publication_tables pt "
        "JOIN pg_publication p ON p.pubname = pt.pubname "
        "WHERE p.pubupdate AND pt.schemaname = %(s)s AND pt.tablename = %(n)s) "
        "FROM pg_class c WHERE c.oid = to_regclass(format('%%I.%%I', %(s)s::text, %(n)s::text))",
        {"s": schema, "n": name},
    ).fetchone()
    return bool(row and row[0])


def _publishes_updates(conn: psycopg.Connection[Any], schema: str) -> bool:
    """Whether a publication replicates the updates of every table of ``schema``."""
    in_schema = (
        "OR EXISTS (SELECT 1 FROM pg_publication_namespace n "
        "WHERE n.pnpubid = p.oid AND n.pnnspid = to_regnamespace(quote_ident(%(s)s)))"
        if conn.info.server_version >= 150000
        else ""
    )
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_publication p "
        f"WHERE p.pubupdate AND (p.puballtables {in_schema}))",
        {"s": schema},
    ).fetchone()
    return bool(row and row[0])


def _canonical_legacy(
    conn: psycopg.Connection[Any], stored: state.StoredWatermark, table: TableSpec
) -> state.StoredWatermark:
    """A version-1 watermark in the canonical text of its column's type (see
    :func:`state.canonical_legacy_watermark`); kept as stored when that column is gone."""
    from ematix_flow._engine.sql_common import cast_type

    if stored.value is None or stored.column not in table.column_names:
        return stored
    type_sql = cast_type(table.column(stored.column))
    value = state.canonical_legacy_watermark(conn, stored.value, type_sql)
    return state.StoredWatermark(stored.column, type_sql, value)


def describe_source(conn: psycopg.Connection[Any], source_sql: str) -> tuple[SourceColumn, ...]:
    """The columns of ``source_sql`` (names and types), without reading any row.

    An error in the SQL itself raises :class:`SourceError` with the driver's message
    and the user's line quoted at the error (:func:`source_error_message`); other
    driver errors propagate as they are."""
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        try:
            # No parameters: a "%" in the user's SQL stays a "%".
            cur.execute(_DESCRIBE_HEAD + source_sql + _DESCRIBE_TAIL)
        except psycopg.Error as exc:
            if (exc.sqlstate or "")[:2] not in _SQL_ERROR_CLASSES:
                raise
            raise SourceError(
                source_error_message(exc, source_sql, offset=len(_DESCRIBE_HEAD))
            ) from exc
        desc = cur.description or []
        result = cur.pgresult
        oids = [d.type_code for d in desc]
        mods = [result.fmod(i) if result is not None else -1 for i in range(len(desc))]
        types = [
            r[0]
            for r in cur.execute(
                "SELECT format_type(o, m) FROM unnest(%s::oid[], %s::int[]) "
                "WITH ORDINALITY AS u(o, m, n) ORDER BY n",
                (oids, mods),
            ).fetchall()
        ]
    return tuple(
        SourceColumn(d.name, d.type_code, t or "text") for d, t in zip(desc, types, strict=True)
    )


def source_error_message(exc: psycopg.Error, source_sql: str, *, offset: int) -> str:
    """The driver's message for an error in ``source_sql``, which the failed statement
    held after ``offset`` characters of our own SQL, with the line of ``source_sql`` at
    the error position quoted and marked with a caret, as psql shows it::

        syntax error at end of input
        LINE 3: WHERE
                     ^

    A position past the end of ``source_sql`` (a syntax error "at or near" the wrapper's
    closing parenthesis) is the end of the user's SQL: "at end of input", as PostgreSQL
    says for the query on its own.
    """
    diag = exc.diag
    message = diag.message_primary or " ".join(str(exc).split())
    notes = "".join(f" ({note})" for note in (diag.message_detail, diag.message_hint) if note)
    position = diag.statement_position
    at = int(position) - 1 - offset if position else -1
    if at < 0:
        return message + notes
    if at >= len(source_sql):
        at = len(source_sql)
        if message.startswith("syntax error at or near"):
            message = "syntax error at end of input"
    start = source_sql.rfind("\n", 0, at) + 1
    end = source_sql.find("\n", at)
    line = source_sql[start : end if end != -1 else len(source_sql)]
    number = source_sql.count("\n", 0, at) + 1
    label = f"LINE {number}: "
    pad = "".join(c if c == "\t" else " " for c in line[: at - start])
    return f"{message}{notes}\n{label}{line}\n{' ' * len(label)}{pad}^"


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
