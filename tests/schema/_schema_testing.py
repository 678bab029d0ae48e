"""Small helpers shared by the schema tests: create a spec's table, measure its drift."""

from __future__ import annotations

from typing import Any

import psycopg

from ematix_flow._schema import compare_table, create_schema_sql, create_table_sql, reflect_table
from ematix_flow._schema.drift import Difference
from ematix_flow._tablespec import TableSpec


def create(conn: psycopg.Connection[Any], spec: TableSpec) -> None:
    conn.execute(create_schema_sql(spec.schema))
    conn.execute(create_table_sql(spec))


def reflect(conn: psycopg.Connection[Any], spec: TableSpec) -> TableSpec:
    reflected = reflect_table(conn, spec.schema, spec.name)
    assert reflected is not None, f"{spec.qualified_name} was not found"
    return reflected


def drift(conn: psycopg.Connection[Any], spec: TableSpec) -> list[Difference]:
    return compare_table(spec, reflect(conn, spec))
