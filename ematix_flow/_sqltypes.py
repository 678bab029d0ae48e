"""The SQL column types of the table model, defined below both of their users.

:mod:`ematix_flow.types` is the public home of these names (spec §1) and also
re-exports ``Column``; ``Column`` normalizes its type through :func:`sql_type`. Defining
the types here lets ``ematix_flow._column`` import them without importing
``ematix_flow.types``, so the two never import each other. Every public name keeps
``__module__ == "ematix_flow.types"``, so reprs, ``help()`` and pickles name the public
module. See :mod:`ematix_flow.types` for examples.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from ematix_flow._errors import DefinitionError

__all__ = [
    "BigInt",
    "Boolean",
    "Bytea",
    "Date",
    "DoublePrecision",
    "Integer",
    "Interval",
    "Jsonb",
    "Numeric",
    "Real",
    "SmallInt",
    "SqlType",
    "String",
    "Text",
    "Time",
    "Timestamp",
    "TimestampTZ",
    "Uuid",
    "parse_type",
    "sql_type",
]


class SqlType:
    """A PostgreSQL column type. Instances are immutable values compared by DDL."""

    #: The name PostgreSQL's ``format_type()`` prints for this type.
    pg_name: ClassVar[str] = ""
    #: Extra spellings accepted when reading a type back (``int8`` for ``bigint``).
    aliases: ClassVar[tuple[str, ...]] = ()

    __slots__ = ()

    @property
    def ddl(self) -> str:
        return self.pg_name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SqlType) and other.ddl == self.ddl

    def __hash__(self) -> int:
        return hash(self.ddl)

    def __repr__(self) -> str:
        return f"{type(self).__name__.split('[')[0]}()"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")


class BigInt(SqlType):
    pg_name = "bigint"
    aliases = ("int8",)


class Integer(SqlType):
    pg_name = "integer"
    aliases = ("int", "int4")


class SmallInt(SqlType):
    pg_name = "smallint"
    aliases = ("int2",)


class Boolean(SqlType):
    pg_name = "boolean"
    aliases = ("bool",)


class Text(SqlType):
    pg_name = "text"


class Real(SqlType):
    pg_name = "real"
    aliases = ("float4",)


class DoublePrecision(SqlType):
    pg_name = "double precision"
    aliases = ("float8",)


class Date(SqlType):
    pg_name = "date"


class Time(SqlType):
    pg_name = "time without time zone"
    aliases = ("time",)


class Timestamp(SqlType):
    pg_name = "timestamp without time zone"
    aliases = ("timestamp",)


class TimestampTZ(SqlType):
    pg_name = "timestamp with time zone"
    aliases = ("timestamptz",)


class Interval(SqlType):
    pg_name = "interval"


class Uuid(SqlType):
    pg_name = "uuid"


class Jsonb(SqlType):
    pg_name = "jsonb"


class Bytea(SqlType):
    pg_name = "bytea"


_subscripted: dict[tuple[type, tuple[int, ...]], type] = {}


def _subscript(cls: type, params: tuple[int, ...]) -> type:
    """``String[256]`` → a cached subclass whose instances default to those parameters.

    A class (not an instance) so that ``String[256] | None`` and
    ``Annotated[String[256], pk()]`` are ordinary typing constructs.
    """
    key = (cls, params)
    if key not in _subscripted:
        cls(*params)  # validates the parameters eagerly
        label = f"{cls.__name__}[{', '.join(map(str, params))}]"
        namespace = {"__slots__": (), "_defaults": params, "__module__": cls.__module__}
        _subscripted[key] = type(label, (cls,), namespace)
    return _subscripted[key]


def _positive(type_name: str, what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DefinitionError(f"{type_name}: {what} must be a positive integer, got {value!r}")
    return value


class String(SqlType):
    """``character varying(n)``; ``String()`` without a length is unbounded varchar."""

    pg_name = "character varying"
    aliases = ("varchar",)
    __slots__ = ("length",)
    _defaults: ClassVar[tuple[int, ...]] = ()
    length: int | None

    def __init__(self, length: int | None = None) -> None:
        if length is None and self._defaults:
            (length,) = self._defaults
        if length is not None:
            _positive("String", "length", length)
        object.__setattr__(self, "length", length)

    def __class_getitem__(cls, length: int) -> type:
        return _subscript(cls, (length,))

    @property
    def ddl(self) -> str:
        return f"character varying({self.length})" if self.length else self.pg_name

    def __repr__(self) -> str:
        return f"String({self.length})" if self.length else "String()"


class Numeric(SqlType):
    """``numeric(precision, scale)``; ``Numeric()`` alone is arbitrary precision."""

    pg_name = "numeric"
    aliases = ("decimal",)
    __slots__ = ("precision", "scale")
    _defaults: ClassVar[tuple[int, ...]] = ()
    precision: int | None
    scale: int | None

    def __init__(self, precision: int | None = None, scale: int | None = None) -> None:
        if precision is None and self._defaults:
            precision, scale = (*self._defaults, None)[:2]
        if precision is not None:
            _positive("Numeric", "precision", precision)
            if precision > 1000:
                raise DefinitionError(f"Numeric: precision must be at most 1000, got {precision}")
        if scale is not None:
            if precision is None:
                raise DefinitionError("Numeric: a scale needs a precision, e.g. Numeric[12, 2]")
            if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= precision:
                raise DefinitionError(
                    f"Numeric: scale must be an integer between 0 and the precision "
                    f"({precision}), got {scale!r}"
                )
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "scale", scale)

    def __class_getitem__(cls, params: int | tuple[int, int]) -> type:
        return _subscript(cls, params if isinstance(params, tuple) else (params,))

    @property
    def ddl(self) -> str:
        if self.precision is None:
            return "numeric"
        return f"numeric({self.precision},{self.scale or 0})"

    def __repr__(self) -> str:
        if self.precision is None:
            return "Numeric()"
        return f"Numeric({self.precision}, {self.scale or 0})"


_ALL_TYPES: tuple[type[SqlType], ...] = (
    BigInt, Integer, SmallInt, Boolean, Text, String, Numeric, Real, DoublePrecision,
    Date, Time, Timestamp, TimestampTZ, Interval, Uuid, Jsonb, Bytea,
)  # fmt: skip

_BY_NAME: dict[str, type[SqlType]] = {
    name: cls for cls in _ALL_TYPES for name in (cls.pg_name, *cls.aliases)
}
_PARAMS = re.compile(r"^(?P<name>[a-z][a-z0-9 ]*?)\s*(?:\((?P<args>[0-9, ]+)\))?$")


def sql_type(value: object) -> SqlType:
    """Normalize a declared type (``BigInt``, ``BigInt()``, ``String[256]``) to an instance."""
    if isinstance(value, SqlType):
        return value
    if isinstance(value, type) and issubclass(value, SqlType) and value is not SqlType:
        return value()
    raise DefinitionError(
        f"{value!r} is not an ematix_flow column type; use one of "
        f"{', '.join(t.__name__ for t in _ALL_TYPES)} from ematix_flow.types"
    )


def parse_type(text: str) -> SqlType | None:
    """Read a type as PostgreSQL's ``format_type()`` prints it; ``None`` if not one of ours."""
    match = _PARAMS.match(text.strip().lower())
    if not match or match["name"] not in _BY_NAME:
        return None
    cls = _BY_NAME[match["name"]]
    args = [int(a) for a in match["args"].split(",")] if match["args"] else []
    try:
        return cls(*args)
    except (TypeError, DefinitionError):
        return None


# Public through ematix_flow.types: name that module in reprs, help() and pickles.
for _name in __all__:
    globals()[_name].__module__ = "ematix_flow.types"
