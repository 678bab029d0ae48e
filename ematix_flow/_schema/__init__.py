"""The schema layer: DDL from a :class:`~ematix_flow._tablespec.TableSpec`, reflection
of an existing table, and drift between the two.

Called by the engine (create a missing target, reflect an existing one, add what is
safely additive, refuse the rest) and by the preview (show the drift). It talks to the
database only through the ``psycopg.Connection`` it is given and never imports a front
end.
"""

from __future__ import annotations

from ematix_flow._schema.ddl import (
    add_constraints_sql,
    create_schema_sql,
    create_table_sql,
    primary_key_name,
    unique_constraint_name,
)
from ematix_flow._schema.drift import (
    ColumnExtra,
    ColumnMissing,
    Difference,
    NullabilityMismatch,
    PrimaryKeyMismatch,
    TypeMismatch,
    UniqueConstraintExtra,
    UniqueConstraintMissing,
    additive_sql,
    compare_table,
    destructive,
)
from ematix_flow._schema.reflect import UnknownType, reflect_table

__all__ = [
    "ColumnExtra",
    "ColumnMissing",
    "Difference",
    "NullabilityMismatch",
    "PrimaryKeyMismatch",
    "TypeMismatch",
    "UniqueConstraintExtra",
    "UniqueConstraintMissing",
    "UnknownType",
    "add_constraints_sql",
    "additive_sql",
    "compare_table",
    "create_schema_sql",
    "create_table_sql",
    "destructive",
    "primary_key_name",
    "reflect_table",
    "unique_constraint_name",
]
