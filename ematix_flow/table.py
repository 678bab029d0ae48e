"""The imperative table model: ``class X(ManagedTable)`` with ``Column`` attributes.

Example (spec §1)::

    class CustomerDim(ManagedTable):
        __schema__ = "warehouse"
        __tablename__ = "customer_dim"

        customer_id = Column(BigInt(), nullable=False, primary_key=True)
        email = Column(String(256), nullable=False)

    CustomerDim.__table_spec__.primary_key   # ("customer_id",)

The class is validated when it is created and carries one frozen :class:`TableSpec` in
``__table_spec__``; ``@ematix.table`` builds exactly such a subclass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ematix_flow._column import Column
from ematix_flow._errors import DefinitionError
from ematix_flow._tablespec import ColumnSpec, TableSpec

__all__ = ["Column", "ColumnSpec", "ManagedTable", "TableSpec", "table_spec"]


def _names_tuple(value: Any, what: str, owner: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise DefinitionError(
            f"{owner}.{what} must be a tuple of column names, e.g. ('a', 'b'), got {value!r}"
        )
    for v in value:
        if not isinstance(v, str):
            raise DefinitionError(f"{owner}.{what} must hold column names, got {v!r}")
    return tuple(value)


class ManagedTable:
    """Base class of every managed table; subclasses are validated at class creation."""

    __schema__: ClassVar[str]
    __tablename__: ClassVar[str]
    __unique_constraints__: ClassVar[tuple[tuple[str, ...], ...]] = ()
    __merge_keys__: ClassVar[tuple[str, ...] | None] = None
    __primary_keys__: ClassVar[tuple[str, ...]] = ()
    __table_spec__: ClassVar[TableSpec]
    #: Pipeline defaults declared on the table (``@ematix.table(mode=...)``).
    __table_options__: ClassVar[Mapping[str, Any]] = {}
    #: "natural_key()" when ``@ematix.table`` derived the constraints from markers.
    __unique_origin__: ClassVar[str | None] = None
    #: "pk()" when ``@ematix.table`` derived the primary key from markers.
    __primary_key_form__: ClassVar[str] = "primary_key=True"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        owner = cls.__name__
        schema = cls.__dict__.get("__schema__")
        if schema is None:
            raise DefinitionError(
                f"{owner} has no __schema__; every managed table lives in an explicit "
                f'schema: add __schema__ = "warehouse" (or schema="..." with @ematix.table)'
            )
        name = cls.__dict__.get("__tablename__") or _snake_case(owner)
        columns: list[ColumnSpec] = []
        primary: list[str] = []
        for attr, value in cls.__dict__.items():
            if isinstance(value, Column):
                columns.append(
                    ColumnSpec(attr, value.type, value.nullable, identity=value.autoincrement)
                )
                if value.primary_key:
                    primary.append(attr)
        uniques = tuple(
            _names_tuple(uc, "__unique_constraints__", owner)
            for uc in _outer_tuple(cls.__dict__.get("__unique_constraints__", ()), owner)
        )
        merge_keys = cls.__dict__.get("__merge_keys__")
        if merge_keys is not None:
            merge_keys = _names_tuple(merge_keys, "__merge_keys__", owner)
        origin = cls.__dict__.get("__unique_origin__") or (
            "__unique_constraints__" if uniques else None
        )
        spec = TableSpec(
            schema=schema,
            name=name,
            columns=tuple(columns),
            primary_key=tuple(primary),
            unique_constraints=uniques,
            unique_origin=origin,
            merge_keys=merge_keys,
            primary_key_form=cls.__dict__.get("__primary_key_form__", "primary_key=True"),
            options=dict(cls.__dict__.get("__table_options__", {})),
        )
        cls.__tablename__ = name
        cls.__unique_constraints__ = uniques
        cls.__primary_keys__ = tuple(primary)
        cls.__table_spec__ = spec


def _outer_tuple(value: Any, owner: str) -> tuple[Any, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise DefinitionError(
            f"{owner}.__unique_constraints__ must be a tuple of column-name tuples, "
            f"e.g. (('col1', 'col2'), ('col3',)), got {value!r}"
        )
    return tuple(value)


def _snake_case(name: str) -> str:
    out: list[str] = []
    for i, ch in enumerate(name):
        if (
            ch.isupper()
            and i
            and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower()))
        ):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def table_spec(table: type[ManagedTable] | TableSpec) -> TableSpec:
    """The ``TableSpec`` of a managed table class (or the spec itself)."""
    if isinstance(table, TableSpec):
        return table
    if isinstance(table, type) and issubclass(table, ManagedTable) and table is not ManagedTable:
        return table.__table_spec__
    raise DefinitionError(
        f"{table!r} is not a managed table: decorate the class with "
        "@ematix.table(schema=...) or subclass ManagedTable"
    )
