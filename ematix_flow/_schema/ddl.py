"""CREATE SQL for a managed table: schema, table, primary key and unique constraints.

The engine calls these to create a target that does not exist yet, and
:mod:`ematix_flow._schema.drift` reuses the constraint names when it adds a missing
unique constraint, so a table created now and one repaired later look the same.

Every identifier goes through :class:`psycopg.sql.Identifier`; column types are our own
fixed strings (:attr:`ematix_flow.types.SqlType.ddl`), never user text.

Example::

    >>> from ematix_flow._tablespec import ColumnSpec, TableSpec
    >>> from ematix_flow.types import BigInt, Text
    >>> spec = TableSpec("warehouse", "customer", (
    ...     ColumnSpec("id", BigInt(), nullable=False), ColumnSpec("email", Text())),
    ...     primary_key=("id",), unique_constraints=(("email",),))
    >>> print(create_table_sql(spec).as_string(None))  # doctest: +NORMALIZE_WHITESPACE
    CREATE TABLE IF NOT EXISTS "warehouse"."customer" (
        "id" bigint NOT NULL,
        "email" text,
        CONSTRAINT "customer_pkey" PRIMARY KEY ("id"),
        CONSTRAINT "customer_email_key" UNIQUE ("email")
    )
"""

from __future__ import annotations

import hashlib

from psycopg import sql

from ematix_flow._errors import DefinitionError
from ematix_flow._schema.reflect import UnknownType
from ematix_flow._tablespec import MAX_IDENTIFIER_BYTES, ColumnSpec, TableSpec
from ematix_flow.types import BigInt, Integer, SmallInt

__all__ = [
    "column_definition_sql",
    "create_schema_sql",
    "create_table_sql",
    "primary_key_name",
    "qualified_table",
    "unique_constraint_name",
    "unique_constraint_names",
    "unique_constraint_sql",
]

#: Types PostgreSQL accepts for ``GENERATED … AS IDENTITY``.
_IDENTITY_TYPES = (SmallInt(), Integer(), BigInt())
_HASH_CHARS = 8


def qualified_table(spec: TableSpec) -> sql.Composed:
    """``"schema"."table"`` for ``spec``."""
    return sql.SQL("{}.{}").format(sql.Identifier(spec.schema), sql.Identifier(spec.name))


def create_schema_sql(schema: str) -> sql.Composed:
    """``CREATE SCHEMA IF NOT EXISTS "schema"``.

    >>> create_schema_sql("warehouse").as_string(None)
    'CREATE SCHEMA IF NOT EXISTS "warehouse"'
    """
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))


def _fit(stem: str, suffix: str, key: tuple[str, ...], *, force_hash: bool = False) -> str:
    """``stem + suffix`` if it fits in 63 bytes, else a truncated stem plus a short hash.

    The hash is taken over the unambiguous ``key`` (table and column names), so two
    long names that share a prefix still get different constraint names.
    """
    name = stem + suffix
    if not force_hash and len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256("\x00".join(key).encode()).hexdigest()[:_HASH_CHARS]
    tail = f"_{digest}{suffix}"
    room = MAX_IDENTIFIER_BYTES - len(tail.encode())
    # Cut on a character boundary: a name must stay valid UTF-8.
    head = stem.encode()[:room].decode(errors="ignore")
    return head + tail


def primary_key_name(spec: TableSpec) -> str:
    """``<table>_pkey``, shortened with a hash when longer than 63 bytes."""
    return _fit(spec.name, "_pkey", (spec.name, "pkey"))


def unique_constraint_names(spec: TableSpec) -> dict[tuple[str, ...], str]:
    """The name of each unique constraint of ``spec``: ``<table>_<col>_<col>_key``.

    Names that would exceed 63 bytes, or collide with another constraint of the same
    table (``("a_b",)`` and ``("a", "b")``), get a short hash instead of their tail.
    """
    plain = {
        cols: _fit(f"{spec.name}_{'_'.join(cols)}", "_key", (spec.name, *cols))
        for cols in spec.unique_constraints
    }
    taken = [primary_key_name(spec)] if spec.primary_key else []
    names: dict[tuple[str, ...], str] = {}
    for cols, name in plain.items():
        if name in taken or list(plain.values()).count(name) > 1:
            name = _fit(
                f"{spec.name}_{'_'.join(cols)}", "_key", (spec.name, *cols), force_hash=True
            )
        names[cols] = name
        taken.append(name)
    return names


def unique_constraint_name(spec: TableSpec, columns: tuple[str, ...]) -> str:
    """The name :func:`create_table_sql` gives the unique constraint on ``columns``."""
    names = unique_constraint_names(spec)
    if columns in names:
        return names[columns]
    # A constraint the spec does not declare (used when naming one for a report).
    return _fit(f"{spec.name}_{'_'.join(columns)}", "_key", (spec.name, *columns))


def _check_identity(spec: TableSpec, column: ColumnSpec) -> None:
    if not column.identity:
        return
    where = f"column {column.name!r} of table {spec.qualified_name}"
    if column.type not in _IDENTITY_TYPES:
        raise DefinitionError(
            f"{where} is an identity (autoincrement) column of type {column.type.ddl}; "
            "identity columns must be SmallInt, Integer or BigInt"
        )
    if column.nullable:
        raise DefinitionError(
            f"{where} is an identity (autoincrement) column but nullable; identity columns "
            "are always NOT NULL, declare it with nullable=False"
        )


def column_definition_sql(spec: TableSpec, column: ColumnSpec) -> sql.Composed:
    """``"name" type [GENERATED BY DEFAULT AS IDENTITY] [NOT NULL]`` for one column."""
    if isinstance(column.type, UnknownType):
        # Its text came from a catalog, not from our fixed type strings: never render it.
        raise DefinitionError(
            f"column {column.name!r} of table {spec.qualified_name} has type "
            f"{column.type.ddl!r}, which ematix-flow does not model; declare it with a "
            "type from ematix_flow.types"
        )
    _check_identity(spec, column)
    parts: list[sql.Composable] = [sql.Identifier(column.name), sql.SQL(column.type.ddl)]
    if column.identity:
        parts.append(sql.SQL("GENERATED BY DEFAULT AS IDENTITY"))
    if not column.nullable:
        parts.append(sql.SQL("NOT NULL"))
    return sql.SQL(" ").join(parts)


def _column_list(columns: tuple[str, ...]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


_DEFERRABLE = sql.SQL(" DEFERRABLE INITIALLY IMMEDIATE")


def unique_constraint_sql(
    name: str, columns: tuple[str, ...], *, deferrable: bool = False
) -> sql.Composed:
    """``CONSTRAINT "name" UNIQUE ("a", "b") [DEFERRABLE INITIALLY IMMEDIATE]``."""
    return sql.SQL("CONSTRAINT {} UNIQUE ({}){}").format(
        sql.Identifier(name), _column_list(columns), _DEFERRABLE if deferrable else sql.SQL("")
    )


def create_table_sql(
    spec: TableSpec,
    *,
    deferrable_except: tuple[str, ...] | None = None,
    constraints: bool = True,
) -> sql.Composed:
    """``CREATE TABLE IF NOT EXISTS`` for ``spec``: columns in order, then the constraints.

    The primary key is named ``<table>_pkey`` and each unique constraint
    ``<table>_<columns>_key`` (PostgreSQL's own convention), shortened with a hash when
    a name would pass PostgreSQL's 63-byte limit. With ``deferrable_except`` (the merge
    keys, which ``ON CONFLICT`` needs checked per row), every other unique constraint is
    ``DEFERRABLE INITIALLY IMMEDIATE``, so a run that defers them can let two rows swap
    a unique value. The primary key never is: foreign keys reference it.
    ``constraints=False``: the columns only (a table filled first, then given its keys by
    :func:`add_constraints_sql` — building an index once is cheaper than row by row).

    >>> from ematix_flow._tablespec import ColumnSpec, TableSpec
    >>> from ematix_flow.types import Text
    >>> create_table_sql(TableSpec("s", "t", (ColumnSpec("a", Text()),))).as_string(None)
    'CREATE TABLE IF NOT EXISTS "s"."t" (\\n    "a" text\\n)'
    """

    items = [column_definition_sql(spec, c) for c in spec.columns]
    if constraints:
        items.extend(_constraints(spec, deferrable_except))
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} (\n    {}\n)").format(
        qualified_table(spec), sql.SQL(",\n    ").join(items)
    )


def add_constraints_sql(
    spec: TableSpec, *, deferrable_except: tuple[str, ...] | None = None
) -> sql.Composed | None:
    """``ALTER TABLE … ADD CONSTRAINT …`` for the primary key and unique constraints that
    :func:`create_table_sql` would have declared inline (same names, same deferrability);
    ``None`` when the table has none."""
    items = [sql.SQL("ADD {}").format(c) for c in _constraints(spec, deferrable_except)]
    if not items:
        return None
    return sql.SQL("ALTER TABLE {} {}").format(qualified_table(spec), sql.SQL(", ").join(items))


def _constraints(spec: TableSpec, deferrable_except: tuple[str, ...] | None) -> list[sql.Composed]:
    def deferrable(cols: tuple[str, ...]) -> bool:
        return deferrable_except is not None and set(cols) != set(deferrable_except)

    items: list[sql.Composed] = []
    if spec.primary_key:
        items.append(
            # never deferrable: foreign keys reference it, and ON CONFLICT may use it
            sql.SQL("CONSTRAINT {} PRIMARY KEY ({})").format(
                sql.Identifier(primary_key_name(spec)), _column_list(spec.primary_key)
            )
        )
    for cols, name in unique_constraint_names(spec).items():
        items.append(unique_constraint_sql(name, cols, deferrable=deferrable(cols)))
    return items
