"""Building blocks shared by the mode statements: the ``src`` CTE, casts, row hash.

Every data statement starts ``WITH src AS (…)``: the source rows with each declared
target column cast to its target type, plus ``__ef_hash`` (row hash of the compare
columns) and ``__ef_vf`` (valid_from of a new SCD2 version) when the mode needs them.
Where the rows come from is the only difference between the two paths:

- same-DB: ``(<source sql>) AS q`` inlined, filtered by the watermark;
- cross-DB: ``pg_temp.ematix_flow_stage AS q``, filled by the binary COPY pipe (the
  watermark filter already ran in the source database).

Run-dependent values never appear in the SQL text (plans must be stable): the batch id
and the watermark are read with ``current_setting('ematix_flow.*')``, set per
transaction by the executor; the run time is ``now()`` (the transaction's start).

The row hash (:meth:`SqlContext.hash_expr`, version :data:`HASH_VERSION`) is canonical:
the md5 of ``"name":'value'`` pairs in column-name order, each value in a form no
session setting changes (every session is pinned besides: :mod:`ematix_flow._session`),
NULLs left out. So the order columns are declared in does not matter, and a nullable
column added later, NULL everywhere, changes no hash.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from psycopg import sql

from ematix_flow._tablespec import ColumnSpec, TableSpec

__all__ = [
    "BATCH_ID",
    "HASH",
    "HASH_NAME",
    "HASH_VERSION",
    "STAGE",
    "VALID_FROM",
    "SqlContext",
    "cast_type",
    "collatable",
    "cols",
    "counts_select",
    "is_temporal",
    "keys_match",
    "render",
    "row_hash",
    "unchanged_by_equality",
]

STAGE = "ematix_flow_stage"
HASH = "__ef_hash"
VALID_FROM = "__ef_vf"
#: Run values written into rows sit in a scalar subquery: evaluated once per statement
#: (an InitPlan), not parsed from text again for every row.
BATCH_ID = sql.SQL("(SELECT current_setting('ematix_flow.batch_id')::uuid)")
#: The row hash's version, recorded per target table in the state schema.
HASH_VERSION = 2
HASH_NAME = f"ematix_flow row hash v{HASH_VERSION}"
WATERMARK_SETTING = "ematix_flow.watermark"
WINDOW_HI_SETTING = "ematix_flow.window_hi"
NOW_SETTING = "ematix_flow.now"


def render(stmt: sql.Composable) -> str:
    return stmt.as_string(None)


def cast_type(col: ColumnSpec) -> str:
    """The type a source value is cast to: the target type, but without a length limit
    for ``varchar(n)``/``char(n)`` — an explicit cast would silently truncate, while the
    INSERT's own assignment raises on a value that is too long."""
    ddl = col.type.ddl
    if ddl.startswith("character varying("):
        return "character varying"
    if ddl.startswith("character("):
        return "text"
    return ddl


_COLLATABLE = re.compile(
    r"(text|character varying|varchar|character|char|bpchar|citext|name)(\(\d+\))?(\[\])*"
)


def collatable(type_sql: str) -> bool:
    """Whether ``type_sql`` is a built-in string type (or an array of one), which carries
    a collation. Other types (a domain over text included) are left as they are."""
    return _COLLATABLE.fullmatch(type_sql.strip().lower()) is not None


#: Types whose equal values have the same canonical text (so the same row hash): equality
#: of every compared column of such types proves a stored row's hash still holds, without
#: computing it. Not: floats (-0 = 0), numeric without a scale (1.0 = 1.00), interval
#: ('1 day' = '24 hours'), jsonb, citext, arrays, domains — those rows are hashed.
_SAME_TEXT_WHEN_EQUAL = re.compile(
    r"smallint|integer|bigint|boolean|uuid|date|bytea|text|character varying"
    r"|timestamp(\(\d\))? with(out)? time zone|numeric\(\d+, *\d+\)"
)
_STRINGS = ("text", "character varying")


def unchanged_by_equality(
    table: TableSpec, columns: tuple[str, ...], stored: str, source: str
) -> sql.Composable | None:
    """``(stored.columns) IS NOT DISTINCT FROM (source.columns)`` when equal values of
    every column's type have one canonical text — then a stored row that this holds for
    has the hash the source row would get, and the hash need not be computed (strings
    compared byte for byte, ``COLLATE "C"``). ``None`` when a column's type has no such
    equality: the hash decides."""
    if not columns:
        return None
    left: list[sql.Composable] = []
    for name in columns:
        type_sql = cast_type(table.column(name)).strip().lower()
        if not _SAME_TEXT_WHEN_EQUAL.fullmatch(type_sql):
            return None
        ident = sql.Identifier(stored, name)
        left.append(sql.SQL('{} COLLATE "C"').format(ident) if type_sql in _STRINGS else ident)
    return sql.SQL("({}) IS NOT DISTINCT FROM ({})").format(
        sql.SQL(", ").join(left), cols(columns, source)
    )


def cols(names: tuple[str, ...], prefix: str | None = None) -> sql.Composable:
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)


def keys_match(keys: tuple[str, ...], left: str, right: str) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k)) for k in keys
    )


@dataclass(frozen=True)
class SqlContext:
    """What the statement builders need; built by the planner."""

    table: TableSpec  # the physical target (declared + framework columns)
    declared: tuple[ColumnSpec, ...]
    keys: tuple[str, ...]
    compare: tuple[str, ...]
    update: tuple[str, ...]
    path: str  # same_db | cross_db
    source_sql: str
    incremental_column: str | None
    watermark_filter: bool  # a stored watermark exists: filter the source by it
    event_timestamp_column: str | None = None
    #: The source is read from the stored maximum on (``>=``): a row that committed late
    #: with that value arrives. Keyed modes leave rows already loaded unchanged; append
    #: skips them (:meth:`already_appended`).
    watermark_op: str = ">="
    #: ``incremental_lookback=``: re-read this much below the watermark (an interval's
    #: text for date/time columns, a number for numeric ones); ``None``: no lookback.
    lookback: str | None = None
    #: Backfill: the source is also bounded above, ``< current_setting(WINDOW_HI)``.
    window_hi: bool = False
    #: Backfill into append: every row of the window is looked up (not only those at
    #: or below the watermark), so rows already loaded are skipped.
    skip_loaded_all: bool = False
    #: The source is the run's shared stage (:mod:`.fanout`), a temporary table.
    staged_source: bool = False
    with_hash: bool = False
    with_valid_from: bool = False
    #: The columns that must be unique within one batch: the merge keys, or for append
    #: the declared primary key (or first unique constraint), if any.
    append_keys: tuple[str, ...] = ()
    #: The statement runs in the source database on behalf of the target's transaction
    #: (a cross-DB load straight into an empty target): the run time is read from
    #: ``current_setting('ematix_flow.now')``, which the executor sets to the target
    #: transaction's ``now()``.
    remote: bool = False

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return self.keys or self.append_keys

    @property
    def target(self) -> sql.Composable:
        return sql.Identifier(self.table.schema, self.table.name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.declared)

    def watermark_value(self, *, once: bool = False) -> sql.Composable:
        """The stored watermark as its type (minus the lookback, if any). As a stable
        expression the planner can estimate (and read an index by), but evaluated —
        its text parsed — for every row a filter meets; ``once``: in a scalar subquery,
        evaluated once per statement, which the planner cannot look into."""
        col = self.table.column(self.incremental_column or "")
        t = sql.SQL(cast_type(col))
        value = sql.SQL("CAST(current_setting({}) AS {})").format(sql.Literal(WATERMARK_SETTING), t)
        if self.lookback is not None:
            amount_type = sql.SQL("interval" if is_temporal(col) else cast_type(col))
            value = sql.SQL("CAST({} - CAST({} AS {}) AS {})").format(
                value, sql.Literal(self.lookback), amount_type, t
            )
        return sql.SQL("(SELECT {})").format(value) if once else value

    def watermark_where(self, alias: str = "q") -> sql.Composable:
        """Rows from the watermark on — and rows whose incremental value is NULL, which a
        high-water mark cannot place: they are read so the run can refuse them
        (:meth:`source_stats` counts them) instead of skipping them forever."""
        col = self.table.column(self.incremental_column or "")
        ident = sql.Identifier(alias, col.name)
        t = sql.SQL(cast_type(col))
        op = sql.SQL(">=" if self.watermark_op == ">=" else ">")
        # A source table: the stable form, whose rows the planner estimates (and reads
        # by an index). The run's shared stage (no index, no statistics, every row
        # scanned): the value computed once, not parsed again for each row.
        bound: sql.Composable = sql.SQL("CAST({} AS {}) {} {}").format(
            ident, t, op, self.watermark_value(once=self.staged_source)
        )
        if self.window_hi:
            bound = sql.SQL("{} AND CAST({} AS {}) < CAST(current_setting({}) AS {})").format(
                bound, ident, t, sql.Literal(WINDOW_HI_SETTING), t
            )
        return sql.SQL(" WHERE ({} OR {} IS NULL)").format(bound, ident)

    def source_relation(self) -> sql.Composable:
        if self.path == "cross_db":
            return sql.SQL("pg_temp.{} AS q").format(sql.Identifier(STAGE))
        where = (
            self.watermark_where()
            if self.incremental_column and self.watermark_filter
            else sql.SQL("")
        )
        # The newline keeps a trailing "-- comment" in the user's SQL from eating ")".
        return sql.SQL("(\n{}\n) AS q{}").format(sql.SQL(self.source_sql), where)

    def now(self) -> sql.Composable:
        """The run time: the target transaction's start."""
        if self.remote:
            return sql.SQL("(SELECT CAST(current_setting({}) AS timestamptz))").format(
                sql.Literal(NOW_SETTING)
            )
        return sql.SQL("now()")

    def casted(self) -> sql.Composable:
        """Each source column cast to the target's type. A string column also drops the
        source's collation (``COLLATE "default"``, which yields to any other): compared
        with a target column, it is compared in the target column's collation, as the
        upsert's ``EXCLUDED`` row is — two different collations would leave PostgreSQL
        none to compare in."""
        return sql.SQL(", ").join(
            sql.SQL("CAST({} AS {}){} AS {}").format(
                sql.Identifier("q", c.name),
                sql.SQL(cast_type(c)),
                sql.SQL(' COLLATE "default"' if collatable(cast_type(c)) else ""),
                sql.Identifier(c.name),
            )
            for c in self.declared
        )

    def hash_expr(self, alias: str, columns: tuple[str, ...]) -> sql.Composable:
        return row_hash(alias, [(n, self.table.column(n).type.ddl) for n in columns])

    def src_cte(self) -> sql.Composable:
        extra: list[sql.Composable] = []
        if self.with_hash:
            extra.append(
                sql.SQL("{} AS {}").format(self.hash_expr("c", self.compare), sql.Identifier(HASH))
            )
        if self.with_valid_from:
            if self.event_timestamp_column:
                vf = sql.SQL("COALESCE(CAST({} AS timestamptz), {})").format(
                    sql.Identifier("c", self.event_timestamp_column), self.now()
                )
            else:
                vf = self.now()
            extra.append(sql.SQL("{} AS {}").format(vf, sql.Identifier(VALID_FROM)))
        inner = sql.SQL("SELECT {} FROM {}").format(self.casted(), self.source_relation())
        if not extra:
            return sql.SQL("src AS (\n  {}\n)").format(inner)
        return sql.SQL("src AS (\n  SELECT c.*, {}\n  FROM ({}) AS c\n)").format(
            sql.SQL(", ").join(extra), inner
        )

    def source_stats(self) -> sql.Composable:
        """``(SELECT count(*) AS source_rows[, max(inc)::text AS watermark] FROM src) s``."""
        items: list[sql.Composable] = [sql.SQL("count(*) AS source_rows")]
        if self.incremental_column:
            inc = sql.Identifier(self.incremental_column)
            items.append(sql.SQL("max({})::text AS watermark").format(inc))
            items.append(sql.SQL("count(*) - count({}) AS null_incremental").format(inc))
        return sql.SQL("(SELECT {} FROM src) AS s").format(sql.SQL(", ").join(items))

    def source_rescan_stats(self) -> sql.Composable:
        """The same one row as :meth:`source_stats`, read from the source relation
        itself rather than from the ``src`` CTE.

        A CTE referenced twice is materialized: every source row is written to a
        tuplestore (spilling to disk past ``work_mem``) before the upsert reads it. With
        ``src`` referenced once, PostgreSQL inlines it into the upsert, and this second,
        independent scan only counts (no casts, no row hash). Both are parts of one
        statement, so they read one snapshot and the counts agree.
        """
        items: list[sql.Composable] = [sql.SQL("count(*) AS source_rows")]
        if self.incremental_column:
            col = self.table.column(self.incremental_column)
            items.append(
                sql.SQL("max(CAST({} AS {}))::text AS watermark").format(
                    sql.Identifier("q", col.name), sql.SQL(cast_type(col))
                )
            )
            items.append(
                sql.SQL("count(*) - count({}) AS null_incremental").format(
                    sql.Identifier("q", col.name)
                )
            )
        return sql.SQL("(SELECT {} FROM {}) AS s").format(
            sql.SQL(", ").join(items), self.source_relation()
        )


def is_temporal(col: ColumnSpec) -> bool:
    """Dates and times: their lookback is an interval (numbers: a number)."""
    ddl = col.type.ddl
    return ddl == "date" or ddl.startswith(("timestamp", "time"))


def _canonical(ident: sql.Composable, ddl: str) -> sql.Composable:
    """A value in a form that does not depend on the session: instants in UTC, bytes in
    hex; every other type's text is fixed once DateStyle, IntervalStyle and
    extra_float_digits are pinned (they are, in every session)."""
    if ddl == "timestamp with time zone":
        return sql.SQL("({} AT TIME ZONE 'UTC')").format(ident)
    if ddl == "bytea":
        return sql.SQL("encode({}, 'hex')").format(ident)
    return ident


def row_hash(alias: str, columns: list[tuple[str, str]]) -> sql.Composable:
    """``md5`` of ``"name":'value';`` for each non-NULL column, in name order.

    ``quote_literal`` of NULL is NULL and ``concat`` skips NULLs, so a NULL column
    contributes nothing; the quoting keeps values from running into each other.
    """
    parts = [
        sql.SQL("{} || quote_literal({})").format(
            sql.Literal(json.dumps(name) + ":"), _canonical(sql.Identifier(alias, name), ddl)
        )
        for name, ddl in sorted(columns)
    ]
    if not parts:
        return sql.SQL("md5('')")
    return sql.SQL("md5(concat({}))").format(sql.SQL(", ").join(parts))


def counts_select(ctx: SqlContext, measures: dict[str, sql.Composable]) -> sql.Composable:
    """The closing ``SELECT`` of a data statement: one row of named counts.

    The source rows are counted by a second scan of the source relation
    (:meth:`SqlContext.source_rescan_stats`), not from ``src``: reading ``src`` twice
    would make PostgreSQL materialize it, which made a same-DB merge of 1M rows 1.8×
    the bare upsert. The cross-DB path knows the count from its COPY, so it only scans
    the stage again when it needs the new watermark."""
    items = [
        sql.SQL("{} AS {}").format(expr, sql.Identifier(name)) for name, expr in measures.items()
    ]
    if ctx.path == "cross_db" and not ctx.incremental_column:
        return sql.SQL("SELECT {}").format(sql.SQL(", ").join(items))
    items.append(sql.SQL("s.*"))
    return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(items), ctx.source_rescan_stats())
