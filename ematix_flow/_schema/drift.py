"""Drift: how an existing table differs from its spec, and the SQL for the safe fixes.

:func:`compare_table` lists typed, frozen differences between a declared
:class:`TableSpec` and the one :func:`ematix_flow._schema.reflect.reflect_table` read
back. Each says whether it is *additive* (fixable without touching existing data: a
missing nullable column, a missing unique constraint) or *tolerated* (harmless to leave
as it is: a column the spec does not declare that an INSERT may leave out, because it is
nullable or has a default — new rows get NULL or the default in it), and describes
itself in a sentence naming the table and column. :func:`additive_sql` renders the fixes
for the additive ones; tolerated ones are reported as warnings; everything else
(:func:`destructive`) is only reported — the engine refuses to guess how to change a
type, a key or a NOT NULL column on a table that holds data.

Example::

    >>> differences = compare_table(spec, reflect_table(conn, "s", "t"))  # doctest: +SKIP
    >>> for statement in additive_sql(spec, differences):  # doctest: +SKIP
    ...     conn.execute(statement)
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from psycopg import sql

from ematix_flow._schema.ddl import (
    column_definition_sql,
    qualified_table,
    unique_constraint_name,
    unique_constraint_sql,
)
from ematix_flow._schema.reflect import UnknownType
from ematix_flow._tablespec import TableSpec
from ematix_flow.types import SqlType

__all__ = [
    "ColumnExtra",
    "ColumnMissing",
    "Difference",
    "NullabilityMismatch",
    "PrimaryKeyMismatch",
    "TypeMismatch",
    "UniqueConstraintExtra",
    "UniqueConstraintMissing",
    "additive_sql",
    "compare_table",
    "destructive",
]

_PLAIN = re.compile(r"^[a-z_][a-z0-9_$]*$")


def _ident(name: str) -> str:
    """A name as it would be typed in psql: bare when plain, else double-quoted."""
    return name if _PLAIN.match(name) else '"' + name.replace('"', '""') + '"'


def _cols(columns: tuple[str, ...]) -> str:
    return "(" + ", ".join(_ident(c) for c in columns) + ")"


def _type(t: SqlType) -> str:
    if isinstance(t, UnknownType):
        return f"{t.ddl} (a type ematix-flow does not model)"
    return t.ddl


def _null(nullable: bool) -> str:
    return "NULL" if nullable else "NOT NULL"


@dataclass(frozen=True)
class Difference(ABC):
    """One way an existing table differs from its spec."""

    schema: str
    table: str

    @property
    def additive(self) -> bool:
        """Whether :func:`additive_sql` can fix it without touching existing data."""
        return False

    @property
    def tolerated(self) -> bool:
        """Whether a run may leave it as it is (reported as a warning, never fixed)."""
        return False

    @property
    def where(self) -> str:
        """``schema.table`` as a reader would type it."""
        return f"{_ident(self.schema)}.{_ident(self.table)}"

    @abstractmethod
    def describe(self) -> str:
        """One sentence naming the table (and column) and what to do about it."""


@dataclass(frozen=True)
class ColumnMissing(Difference):
    """A declared column is not in the table."""

    column: str
    type: SqlType
    nullable: bool

    @property
    def additive(self) -> bool:
        # A NOT NULL column cannot be added to a table with rows: they would violate it.
        return self.nullable

    def describe(self) -> str:
        head = (
            f"table {self.where}: column {_ident(self.column)} ({self.type.ddl} "
            f"{_null(self.nullable)}) is declared but missing"
        )
        if self.nullable:
            return f"{head}; it can be added (ALTER TABLE … ADD COLUMN)"
        return (
            f"{head}; it is NOT NULL, so it cannot be added automatically (existing rows "
            "would have no value for it). Add it by hand with a default, or declare it "
            "nullable."
        )


@dataclass(frozen=True)
class ColumnExtra(Difference):
    """The table has a column the spec does not declare.

    The engine's statements name their columns, so such a column is never written: new
    rows get NULL or its default in it. That is harmless (:attr:`tolerated`) unless the
    column is NOT NULL without a default, when every insert would fail on it.
    """

    column: str
    type: SqlType
    nullable: bool
    #: The table fills it when an INSERT leaves it out (DEFAULT, identity, generated).
    has_default: bool = False

    @property
    def tolerated(self) -> bool:
        return self.nullable or self.has_default

    def describe(self) -> str:
        head = f"table {self.where}: column {_ident(self.column)} ({_type(self.type)} " + _null(
            self.nullable
        )
        if self.tolerated:
            fill = "its default" if self.has_default else "NULL"
            return (
                f"{head}) exists but is not declared; it is left alone (new rows get {fill} "
                "in it). Declare it to sync it, or drop it by hand if it is unused."
            )
        return (
            f"{head}, no default) exists but is not declared, so every insert would fail "
            f"on it. Declare it in the table's class, or change it in SQL: ALTER TABLE "
            f"{self.where} DROP COLUMN {_ident(self.column)} (if it is unused), or ALTER "
            f"TABLE {self.where} ALTER COLUMN {_ident(self.column)} SET DEFAULT … (or DROP "
            "NOT NULL)."
        )


@dataclass(frozen=True)
class TypeMismatch(Difference):
    """A column exists with another type than declared."""

    column: str
    expected: SqlType
    actual: SqlType

    def describe(self) -> str:
        return (
            f"table {self.where}: column {_ident(self.column)} is declared "
            f"{self.expected.ddl} but the table has {_type(self.actual)}; change the "
            "declaration or ALTER the column by hand."
        )


@dataclass(frozen=True)
class NullabilityMismatch(Difference):
    """A column exists with another nullability than declared."""

    column: str
    expected_nullable: bool
    actual_nullable: bool

    def describe(self) -> str:
        return (
            f"table {self.where}: column {_ident(self.column)} is declared "
            f"{_null(self.expected_nullable)} but the table has it "
            f"{_null(self.actual_nullable)}; change the declaration or ALTER the column "
            "by hand."
        )


@dataclass(frozen=True)
class PrimaryKeyMismatch(Difference):
    """The table's primary key is not the declared one (``()`` means none)."""

    expected: tuple[str, ...]
    actual: tuple[str, ...]

    def describe(self) -> str:
        declared = f"primary key {_cols(self.expected)}" if self.expected else "no primary key"
        found = f"primary key {_cols(self.actual)}" if self.actual else "no primary key"
        return (
            f"table {self.where}: the spec declares {declared} but the table has {found}; "
            "change the declaration or the table's primary key by hand."
        )


@dataclass(frozen=True)
class UniqueConstraintMissing(Difference):
    """A declared unique constraint (columns in key order) is not on the table."""

    columns: tuple[str, ...]
    #: Declared columns of the constraint that are missing and cannot be added.
    blocked_by: tuple[str, ...] = ()

    @property
    def additive(self) -> bool:
        return not self.blocked_by

    def describe(self) -> str:
        head = f"table {self.where}: unique constraint on {_cols(self.columns)} is missing"
        if self.blocked_by:
            return (
                f"{head}; it cannot be added before column(s) {_cols(self.blocked_by)} "
                "exist (see the missing NOT NULL columns)."
            )
        return (
            f"{head}; it can be added (ALTER TABLE … ADD CONSTRAINT … UNIQUE), which fails "
            "if existing rows hold duplicates."
        )


@dataclass(frozen=True)
class UniqueConstraintExtra(Difference):
    """The table has a unique constraint (columns in key order) the spec does not declare."""

    columns: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"table {self.where}: unique constraint on {_cols(self.columns)} exists but is "
            "not declared; ematix-flow never drops constraints. Declare it, or drop it by "
            "hand."
        )


def compare_table(spec: TableSpec, reflected: TableSpec) -> list[Difference]:
    """The differences between a declared table and the existing one, in a fixed order.

    Order: per declared column (in spec order) missing / type / nullability, then extra
    columns (in table order), the primary key, missing unique constraints (spec order),
    extra unique constraints (table order: by constraint name). Unique constraints compare
    as ordered column tuples; constraint names and column order in the table do not matter.

    >>> compare_table(spec, spec)  # doctest: +SKIP
    []
    """
    at = {"schema": spec.schema, "table": spec.name}
    out: list[Difference] = []
    existing = {c.name: c for c in reflected.columns}
    declared = set(spec.column_names)
    for col in spec.columns:
        found = existing.get(col.name)
        if found is None:
            out.append(ColumnMissing(**at, column=col.name, type=col.type, nullable=col.nullable))
            continue
        if found.type != col.type:
            out.append(TypeMismatch(**at, column=col.name, expected=col.type, actual=found.type))
        if found.nullable != col.nullable:
            out.append(
                NullabilityMismatch(
                    **at,
                    column=col.name,
                    expected_nullable=col.nullable,
                    actual_nullable=found.nullable,
                )
            )
    out.extend(
        ColumnExtra(
            **at, column=c.name, type=c.type, nullable=c.nullable, has_default=c.has_default
        )
        for c in reflected.columns
        if c.name not in declared
    )
    if spec.primary_key != reflected.primary_key:
        out.append(
            PrimaryKeyMismatch(**at, expected=spec.primary_key, actual=reflected.primary_key)
        )
    unaddable = {c.name for c in spec.columns if c.name not in existing and not c.nullable}
    out.extend(
        UniqueConstraintMissing(**at, columns=uc, blocked_by=tuple(c for c in uc if c in unaddable))
        for uc in spec.unique_constraints
        if uc not in reflected.unique_constraints
    )
    out.extend(
        UniqueConstraintExtra(**at, columns=uc)
        for uc in reflected.unique_constraints
        if uc not in spec.unique_constraints
    )
    return out


def destructive(differences: Iterable[Difference]) -> list[Difference]:
    """The differences that stop a run: :func:`additive_sql` will not fix them and they
    are not :attr:`~Difference.tolerated`. Report them, change nothing."""
    return [d for d in differences if not d.additive and not d.tolerated]


def additive_sql(spec: TableSpec, differences: Sequence[Difference]) -> list[sql.Composed]:
    """``ALTER TABLE`` statements fixing the additive differences of ``spec``'s table.

    Missing nullable columns are added first (in the given order), then missing unique
    constraints, named as :func:`~ematix_flow._schema.ddl.create_table_sql` would name
    them. Non-additive differences are skipped: see :func:`destructive`.

    >>> for statement in additive_sql(spec, compare_table(spec, reflected)):  # doctest: +SKIP
    ...     conn.execute(statement)
    """
    table = qualified_table(spec)
    columns: list[sql.Composed] = []
    constraints: list[sql.Composed] = []
    for diff in differences:
        if (diff.schema, diff.table) != (spec.schema, spec.name):
            raise ValueError(
                f"difference for table {diff.where} passed with the spec of "
                f"{spec.qualified_name}; compare and fix one table at a time"
            )
        if not diff.additive:
            continue
        if isinstance(diff, ColumnMissing):
            columns.append(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {}").format(
                    table, column_definition_sql(spec, spec.column(diff.column))
                )
            )
        elif isinstance(diff, UniqueConstraintMissing):
            name = unique_constraint_name(spec, diff.columns)
            constraints.append(
                sql.SQL("ALTER TABLE {} ADD {}").format(
                    table, unique_constraint_sql(name, diff.columns)
                )
            )
    return columns + constraints
