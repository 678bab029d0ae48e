"""``@ematix.table``: a class with annotated attributes → a ``ManagedTable`` subclass.

Example (spec §2)::

    @ematix.table(schema="warehouse")
    class CustomerDim:
        customer_id: Annotated[BigInt, pk()]
        email: String[256]
        name: Text | None
        last_seen: TimestampTZ

is exactly the imperative ``class CustomerDim(ManagedTable)`` of spec §1: the decorator
builds that subclass (``Column`` attributes, ``__schema__``, ``__tablename__``,
``__unique_constraints__``, ``__table_options__``) and lets
:class:`~ematix_flow.table.ManagedTable` derive the one :class:`TableSpec` from it, so
both forms cannot drift apart. Everything is checked here, at import time.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin

from ematix_flow._column import Column
from ematix_flow._declarative._markers import (
    MARKER_FACTORIES,
    NaturalKey,
    Nullable,
    PrimaryKey,
)
from ematix_flow._declarative._options import check_combination, normalize_option
from ematix_flow._errors import DefinitionError, MarkerUsageError
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Integer, SmallInt, SqlType, sql_type

__all__ = ["table"]

_INTEGER_TYPES = (BigInt, Integer, SmallInt)
#: Class attributes the decorator consumes itself (never copied onto the new class).
_DROPPED = frozenset({"__dict__", "__weakref__"})
_SPEC_MESSAGE = (
    "{cls} is already {what}. @ematix.table provides field-collection on its own; "
    "remove {remove} or use the imperative class X(ManagedTable) form instead."
)


def table(
    cls: type | None = None,
    /,
    *,
    schema: str | None = None,
    name: str | None = None,
    **table_defaults: Any,
) -> Callable[[type], type[ManagedTable]]:
    """Declare a managed table from a class with type-annotated attributes.

    ``schema=`` is required; ``name=`` overrides the snake-cased class name; any other
    keyword (``mode=``, ``event_timestamp_column=``, ``ttl=``, ``handle_deletes=``,
    ``keys=``, ``compare_columns=``, ``update_columns=``, ``incremental_column=``) is a
    default that ``@ematix.pipeline`` uses for this table unless it says otherwise.

    Example::

        @ematix.table(schema="features", name="user_purchase_features_v1", mode="scd2")
        class UserPurchaseFeatures:
            user_id: Annotated[BigInt, pk()]
            period_start: Annotated[Date, pk()]
            total_spend: Numeric[12, 2] | None
    """
    if cls is not None:
        what = getattr(cls, "__name__", repr(cls))
        raise DefinitionError(
            f'@ematix.table must be called: write @ematix.table(schema="...") above '
            f"class {what}, not bare @ematix.table"
        )

    def decorate(target: type) -> type[ManagedTable]:
        # The frame that holds the class statement, for annotations naming local types.
        caller = sys._getframe(1)
        return _build(
            target, schema=schema, name=name, table_defaults=table_defaults, caller=caller
        )

    return decorate


def _build(
    cls: type, *, schema: str | None, name: str | None, table_defaults: dict[str, Any], caller: Any
) -> type[ManagedTable]:
    if not isinstance(cls, type):
        raise DefinitionError(f"@ematix.table decorates a class, not {cls!r}")
    owner = cls.__name__
    _refuse_stacking(cls)
    if issubclass(cls, ManagedTable):
        raise DefinitionError(
            f"{owner} already subclasses ManagedTable; use either the imperative "
            f"class {owner}(ManagedTable) form or @ematix.table on a plain class, not both"
        )
    if schema is None:
        raise DefinitionError(
            f'@ematix.table on {owner} needs schema=, e.g. @ematix.table(schema="warehouse"); '
            "every managed table lives in an explicit schema"
        )
    if not isinstance(schema, str) or not schema:
        raise DefinitionError(
            f"@ematix.table on {owner}: schema= must be a non-empty string, got {schema!r}"
        )
    if name is not None and (not isinstance(name, str) or not name):
        raise DefinitionError(
            f"@ematix.table on {owner}: name= must be a non-empty string, got {name!r}"
        )

    hints = _type_hints(cls, caller)
    columns: dict[str, Column] = {}
    groups: dict[str, list[str]] = {}
    for attr in _annotated_names(cls, hints):
        column, column_groups = _column(owner, attr, hints[attr])
        if attr in vars(cls):
            raise DefinitionError(
                f"{owner}.{attr} has a value ({vars(cls)[attr]!r}); @ematix.table columns "
                f"take no default values: write only the annotation, '{attr}: <type>'"
            )
        columns[attr] = column
        for group in column_groups:
            groups.setdefault(group, []).append(attr)
    stray = [k for k, v in vars(cls).items() if isinstance(v, Column)]
    if stray:
        raise DefinitionError(
            f"{owner} mixes Column(...) attributes ({', '.join(stray)}) with annotations; "
            "annotate every column (e.g. 'email: String[256]') or use the imperative "
            f"class {owner}(ManagedTable) form"
        )
    if not columns:
        raise DefinitionError(
            f"@ematix.table on {owner}: the class declares no columns; annotate them, "
            "e.g. 'customer_id: Annotated[BigInt, pk()]'"
        )

    namespace: dict[str, Any] = {
        k: v for k, v in vars(cls).items() if k not in _DROPPED and k not in columns
    }
    namespace.update(columns)
    for dunder, given, kwarg in (
        ("__schema__", schema, "schema="),
        ("__tablename__", name, "name="),
    ):
        declared = vars(cls).get(dunder)
        if declared is not None and given is not None and declared != given:
            raise DefinitionError(
                f"@ematix.table on {owner}: {kwarg}{given!r} contradicts {dunder} = "
                f"{declared!r} in the class body; keep one of the two"
            )
    namespace["__schema__"] = schema
    namespace["__primary_key_form__"] = "pk()"
    if name is not None:
        namespace["__tablename__"] = name
    if groups:
        if "__unique_constraints__" in vars(cls):
            raise DefinitionError(
                f"{owner} declares unique constraints twice: with natural_key() markers and "
                "with __unique_constraints__; keep one of the two"
            )
        namespace["__unique_constraints__"] = tuple(tuple(cols) for cols in groups.values())
        namespace["__unique_origin__"] = "natural_key()"
    where = f"@ematix.table on {owner}"
    options = {
        key: normalize_option(key, value, where=where, columns=columns)
        for key, value in table_defaults.items()
    }
    check_combination(options, where=where)
    namespace["__table_options__"] = options

    bases = tuple(b for b in cls.__bases__ if b is not object)
    return typing.cast("type[ManagedTable]", type(owner, (ManagedTable, *bases), namespace))


def _refuse_stacking(cls: type) -> None:
    """@dataclass / attrs / Pydantic each collect fields their own way (spec §3, Q4)."""
    owner = cls.__name__
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and issubclass(cls, pydantic.BaseModel):
        raise DefinitionError(
            _SPEC_MESSAGE.format(cls=owner, what="a Pydantic BaseModel", remove="BaseModel")
        )
    if "__attrs_attrs__" in vars(cls):
        raise DefinitionError(
            _SPEC_MESSAGE.format(
                cls=owner, what="decorated with @attrs.define", remove="@attrs.define"
            )
        )
    if dataclasses.is_dataclass(cls):
        raise DefinitionError(
            _SPEC_MESSAGE.format(cls=owner, what="decorated with @dataclass", remove="@dataclass")
        )


def _type_hints(cls: type, caller: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except NameError:
        pass  # maybe a type defined next to the class, inside a function: retry below
    except Exception as exc:
        raise _unreadable(cls, exc) from exc
    try:
        return typing.get_type_hints(
            cls, localns=dict(caller.f_locals) if caller else None, include_extras=True
        )
    except Exception as exc:
        raise _unreadable(cls, exc) from exc


def _unreadable(cls: type, exc: Exception) -> DefinitionError:
    return DefinitionError(
        f"@ematix.table on {cls.__name__}: an annotation cannot be read ({exc}); annotate "
        "columns with types imported from ematix_flow.types, e.g. "
        "'from ematix_flow.types import BigInt, String' and 'email: String[256]'"
    )


def _annotated_names(cls: type, hints: dict[str, Any]) -> list[str]:
    """Annotated attributes in declaration order, bases first (as dataclasses do)."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        for attr in vars(klass).get("__annotations__", {}):
            if attr in names or (attr.startswith("__") and attr.endswith("__")):
                continue
            if attr in hints and _is_classvar(hints[attr]):
                continue
            names.append(attr)
    return names


def _is_classvar(hint: Any) -> bool:
    if get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    return hint is ClassVar or get_origin(hint) is ClassVar


def _column(owner: str, attr: str, hint: Any) -> tuple[Column, list[str]]:
    """One annotation → its ``Column`` and the natural-key groups it joins."""
    where = f"{owner}.{attr}"
    metadata: list[Any] = []
    is_nullable = False
    # Peel Annotated[...] and Optional[...] in either nesting order.
    while True:
        origin = get_origin(hint)
        if origin is Annotated:
            metadata.extend(hint.__metadata__)
            hint = hint.__origin__
        elif origin is Union or origin is types.UnionType:
            members = [a for a in get_args(hint) if a is not type(None)]
            if len(members) != len(get_args(hint)) - 1 or len(members) != 1:
                raise DefinitionError(
                    f"{where}: a column has exactly one type; the annotation {hint!r} unions "
                    "several. Use one type, with '| None' if the column is nullable"
                )
            is_nullable = True
            hint = members[0]
        else:
            break
    sql = _sql_type(where, hint)

    primary: PrimaryKey | None = None
    groups: list[str] = []
    for item in metadata:
        if item in MARKER_FACTORIES:
            marker = MARKER_FACTORIES[item]
            raise MarkerUsageError(
                f"{where}: the marker {marker} is used without calling it; use {marker}() "
                f"(e.g. Annotated[{_type_label(hint)}, {marker}()]) — markers are always called"
            )
        if isinstance(item, PrimaryKey):
            if primary is not None:
                raise DefinitionError(f"{where}: pk() is given twice; give it once")
            primary = item
        elif isinstance(item, NaturalKey):
            if item.group in groups:
                raise DefinitionError(
                    f"{where}: natural_key({item.group!r}) is given twice; give it once"
                )
            groups.append(item.group)
        elif isinstance(item, Nullable):
            is_nullable = True
        # Other metadata belongs to other tools (PEP 593) and is left alone.
    if primary is not None and is_nullable:
        raise DefinitionError(
            f"{where} is marked pk() but declared nullable; primary-key columns are NOT NULL. "
            "Remove '| None' / nullable() from the annotation, or drop pk()"
        )
    if primary is not None and primary.autoincrement and not isinstance(sql, _INTEGER_TYPES):
        raise DefinitionError(
            f"{where}: pk(autoincrement=True) needs an integer column (BigInt, Integer or "
            f"SmallInt), not {_type_label(hint)}"
        )
    column = Column(
        sql,
        nullable=is_nullable,
        primary_key=primary is not None,
        autoincrement=bool(primary and primary.autoincrement),
    )
    return column, groups


def _sql_type(where: str, hint: Any) -> SqlType:
    if isinstance(hint, SqlType) or (isinstance(hint, type) and issubclass(hint, SqlType)):
        return sql_type(hint)
    if hint in MARKER_FACTORIES or isinstance(hint, (PrimaryKey, NaturalKey, Nullable)):
        raise MarkerUsageError(
            f"{where}: a marker stands where the column type belongs; write "
            "Annotated[<type>, pk()], e.g. Annotated[BigInt, pk()]"
        )
    raise DefinitionError(
        f"{where}: {_type_label(hint)} is not an ematix_flow column type; annotate with a "
        "type from ematix_flow.types, e.g. BigInt, Text, String[256], Numeric[12, 2], "
        "TimestampTZ (add '| None' for a nullable column)"
    )


def _type_label(hint: Any) -> str:
    return getattr(hint, "__name__", None) or repr(hint)
