"""SQL column types of the table model.

Every type renders the DDL PostgreSQL itself prints for it (``format_type()``), so a
declared type and a reflected one compare as equal values. Parameter-less types are
used bare (``BigInt``) or called (``BigInt()``); parameterized ones by subscript
(``String[256]``, ``Numeric[12, 2]``) in annotations, or by call (``String(256)``) in
the imperative ``Column``. Both forms normalize through :func:`sql_type`.

Example::

    >>> sql_type(String[256]).ddl
    'character varying(256)'
    >>> parse_type("numeric(12,2)") == Numeric(12, 2)
    True

The types are defined in ``ematix_flow._sqltypes`` and ``Column`` in
``ematix_flow._column`` (which uses the types); this module only gathers them under the
public name, so neither of those imports it.
"""

from __future__ import annotations

from ematix_flow._column import Column
from ematix_flow._sqltypes import (
    BigInt,
    Boolean,
    Bytea,
    Date,
    DoublePrecision,
    Integer,
    Interval,
    Jsonb,
    Numeric,
    Real,
    SmallInt,
    SqlType,
    String,
    Text,
    Time,
    Timestamp,
    TimestampTZ,
    Uuid,
    parse_type,
    sql_type,
)

__all__ = [
    "BigInt",
    "Boolean",
    "Bytea",
    "Column",
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
