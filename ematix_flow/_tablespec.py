"""``TableSpec``: the one normalized, immutable description of a managed table.

Both the imperative ``class X(ManagedTable)`` and ``@ematix.table`` produce it; the
schema, engine, preview and export layers read nothing else. Framework columns
(``valid_from``, ``row_hash``, …) are added by the engine with ``framework=True`` so the
preview can tell declared columns from added ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from ematix_flow._errors import DefinitionError
from ematix_flow.types import SqlType

__all__ = ["MAX_IDENTIFIER_BYTES", "ColumnSpec", "TableSpec", "check_identifier"]

#: PostgreSQL truncates longer identifiers silently (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63


def check_identifier(value: object, what: str) -> str:
    """Validate a schema, table or column name; any text PostgreSQL can quote is fine."""
    if not isinstance(value, str) or not value:
        raise DefinitionError(f"{what} must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise DefinitionError(f"{what} {value!r} contains a NUL character")
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise DefinitionError(
            f"{what} {value!r} is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte "
            "identifier limit; PostgreSQL would truncate it silently. Choose a shorter name."
        )
    return value


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: SqlType
    nullable: bool = True
    identity: bool = False
    #: Added by the framework (e.g. ``valid_from``), not declared by the user.
    framework: bool = False
    #: Reflected tables only: the table fills the column when an INSERT leaves it out
    #: (a ``DEFAULT``, an identity or a generated column). Not part of equality: a
    #: declaration says nothing about it.
    has_default: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class TableSpec:
    schema: str
    name: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...] = ()
    unique_constraints: tuple[tuple[str, ...], ...] = ()
    #: Where the unique constraints were declared: "natural_key()" or "__unique_constraints__".
    unique_origin: str | None = None
    merge_keys: tuple[str, ...] | None = None
    #: How the table marks primary-key columns: "pk()" (``@ematix.table``) or
    #: "primary_key=True" (``Column`` on a ``ManagedTable``). Messages and reasons speak
    #: the form the user wrote; it is no part of the table's identity (not in ``==``).
    primary_key_form: str = "primary_key=True"
    #: Table-level pipeline defaults (mode=, event_timestamp_column=, ttl=, …).
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        check_identifier(self.schema, "schema")
        check_identifier(self.name, "table name")
        where = f"table {self.schema}.{self.name}"
        if not self.columns:
            raise DefinitionError(f"{where} declares no columns")
        seen: set[str] = set()
        for col in self.columns:
            check_identifier(col.name, f"column name in {where}")
            if col.name in seen:
                raise DefinitionError(f"{where} declares column {col.name!r} twice")
            seen.add(col.name)

        def known(cols: tuple[str, ...], what: str) -> None:
            if not cols:
                raise DefinitionError(f"{where}: {what} names no columns")
            for c in cols:
                if c not in seen:
                    raise DefinitionError(
                        f"{where}: {what} names unknown column {c!r}; "
                        f"columns are {', '.join(sorted(seen))}"
                    )
            if len(set(cols)) != len(cols):
                raise DefinitionError(f"{where}: {what} names a column twice: {cols}")

        if self.primary_key:
            known(self.primary_key, "the primary key")
            for c in self.primary_key:
                if self.column(c).nullable:
                    raise DefinitionError(
                        f"{where}: primary-key column {c!r} is nullable; primary-key "
                        "columns are NOT NULL. Declare it with nullable=False (or drop "
                        "'| None' from its annotation)."
                    )
        for uc in self.unique_constraints:
            known(uc, "a unique constraint")
        if len(set(self.unique_constraints)) != len(self.unique_constraints):
            raise DefinitionError(f"{where}: the same unique constraint is declared twice")
        if self.merge_keys is not None:
            known(self.merge_keys, "__merge_keys__")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def declared_columns(self) -> tuple[ColumnSpec, ...]:
        return tuple(c for c in self.columns if not c.framework)

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def has_column(self, name: str) -> bool:
        return any(c.name == name for c in self.columns)

    def with_columns(self, *extra: ColumnSpec) -> TableSpec:
        """A copy with ``extra`` columns appended (the framework's augmentation)."""
        return replace(self, columns=self.columns + tuple(extra))

    def __hash__(self) -> int:
        return hash((self.schema, self.name, self.columns, self.primary_key))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TableSpec):
            return NotImplemented
        return (
            self.schema, self.name, self.columns, self.primary_key, self.unique_constraints,
            self.unique_origin, self.merge_keys, dict(self.options),
        ) == (
            other.schema, other.name, other.columns, other.primary_key,
            other.unique_constraints, other.unique_origin, other.merge_keys, dict(other.options),
        )  # fmt: skip
