"""Reflection: read an existing table back from ``pg_catalog`` as a :class:`TableSpec`.

The engine reflects a target before it writes to it and hands the result, with the
declared spec, to :func:`ematix_flow._schema.drift.compare_table`. Columns, their types
(``format_type()``, read with :func:`ematix_flow.types.parse_type`), nullability,
identity and whether the table fills a column an INSERT leaves out (a ``DEFAULT``, an
identity, a generated column), the primary key and every unique constraint (each in
key order) come back in one round trip.

A column whose type ematix-flow does not model (an array, ``timestamp(3)``, a domain…)
reflects as :class:`UnknownType` carrying PostgreSQL's own spelling, so drift can name
it instead of failing.

Example::

    >>> spec = reflect_table(conn, "warehouse", "customer_dim")  # doctest: +SKIP
    >>> spec.primary_key  # doctest: +SKIP
    ('customer_id',)
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from ematix_flow._errors import DriftError
from ematix_flow._tablespec import ColumnSpec, TableSpec
from ematix_flow.types import SqlType, parse_type

__all__ = ["UnknownType", "reflect_table"]


class UnknownType(SqlType):
    """A reflected column type ematix-flow does not model, kept as PostgreSQL prints it.

    It compares equal only to another ``UnknownType`` with the same text, so a declared
    type never matches it and drift reports a type mismatch naming the real type.
    """

    __slots__ = ("text",)
    text: str

    def __init__(self, text: str) -> None:
        object.__setattr__(self, "text", text)

    @property
    def ddl(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnknownType) and other.text == self.text

    def __hash__(self) -> int:
        return hash(("unknown", self.text))

    def __repr__(self) -> str:
        return f"UnknownType({self.text!r})"


# One statement, one round trip: the relation, its columns (in attnum order) and its
# primary-key / unique constraints (each with its columns in key order, from conkey's
# ordinality) as JSON arrays.
_REFLECT = """
SELECT
    c.relkind::text AS relkind,
    COALESCE((
        SELECT json_agg(json_build_object(
                   'name', a.attname,
                   'type', format_type(a.atttypid, a.atttypmod),
                   'not_null', a.attnotnull,
                   'identity', a.attidentity <> '',
                   'has_default', a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
               ) ORDER BY a.attnum)
        FROM pg_catalog.pg_attribute AS a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    ), '[]') AS columns,
    COALESCE((
        SELECT json_agg(json_build_object(
                   'kind', con.contype,
                   'name', con.conname,
                   'columns', (
                       SELECT json_agg(a.attname ORDER BY k.ord)
                       FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                       JOIN pg_catalog.pg_attribute AS a
                         ON a.attrelid = c.oid AND a.attnum = k.attnum
                   )
               ) ORDER BY con.conname)
        FROM pg_catalog.pg_constraint AS con
        WHERE con.conrelid = c.oid AND con.contype IN ('p', 'u')
    ), '[]') AS constraints
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(name)s
"""

#: Ordinary and partitioned tables; anything else under that name is not a table.
_TABLE_KINDS = {"r": "table", "p": "partitioned table"}
_OTHER_KINDS = {
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "S": "sequence",
    "i": "index",
    "I": "partitioned index",
    "c": "composite type",
    "t": "TOAST table",
}


def _column(raw: dict[str, Any]) -> ColumnSpec:
    text = raw["type"]
    parsed = parse_type(text)
    return ColumnSpec(
        name=raw["name"],
        type=parsed if parsed is not None else UnknownType(text),
        nullable=not raw["not_null"],
        identity=bool(raw["identity"]),
        has_default=bool(raw["has_default"]),
    )


def _table_spec(**values: Any) -> TableSpec:
    """A :class:`TableSpec` for what the catalog holds.

    The catalog is the truth: PostgreSQL accepts a table with no columns, which a
    declared spec may not be, so that one case skips the declaration checks (there is
    nothing else to check: such a table has no keys either).
    """
    if values["columns"]:
        return TableSpec(**values)
    spec = object.__new__(TableSpec)
    for key, value in {
        **values,
        "unique_origin": None,
        "merge_keys": None,
        "options": MappingProxyType({}),
    }.items():
        object.__setattr__(spec, key, value)
    return spec


def reflect_table(conn: psycopg.Connection[Any], schema: str, name: str) -> TableSpec | None:
    """Read table ``schema.name`` from the catalog; ``None`` when it does not exist.

    Columns come in table order, the primary key and each unique constraint in key
    order; unique constraints are ordered by constraint name (PostgreSQL keeps no
    declaration order), and one declared twice under two names is listed once.
    Raises :class:`~ematix_flow._errors.DriftError` when the name belongs to something
    that is not a table (a view, a sequence…).
    """
    # tuple_row: the caller's connection may carry another row factory.
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(_REFLECT, {"schema": schema, "name": name})
        row = cur.fetchone()
    if row is None:
        return None
    relkind, columns, constraints = row
    if relkind not in _TABLE_KINDS:
        what = _OTHER_KINDS.get(relkind, f"relation of kind {relkind!r}")
        raise DriftError(
            f"{schema}.{name} is a {what}, not a table; ematix-flow manages tables only. "
            "Rename or drop it, or choose another target name."
        )
    primary_key: tuple[str, ...] = ()
    uniques: list[tuple[str, ...]] = []
    for con in constraints:
        cols = tuple(con["columns"] or ())
        if con["kind"] == "p":
            primary_key = cols
        elif cols not in uniques:
            uniques.append(cols)
    return _table_spec(
        schema=schema,
        name=name,
        columns=tuple(_column(c) for c in columns),
        primary_key=primary_key,
        unique_constraints=tuple(uniques),
    )
