"""Where a target's rows come from: a SQL query or a table on a PostgreSQL connection.

Example::

    from ematix_flow.source import Source

    Source.postgres_query("oltp", "SELECT id AS customer_id, email FROM app.users")
    Source.postgres_table("oltp", "app.users", column_map={"customer_id": "id"})

``conn`` is a :class:`ematix_flow.config.Connection` or the name of a configured
connection (resolved when the pipeline runs, so importing a module never needs
credentials). A table source's select list is synthesized when the plan is built, from
the target's declared columns and ``column_map`` (target column → source column).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from psycopg import sql

from ematix_flow._errors import DefinitionError
from ematix_flow._tablespec import check_identifier

if TYPE_CHECKING:
    from ematix_flow._tablespec import TableSpec
    from ematix_flow.config import Connection

__all__ = ["Source", "parse_table_name"]


def parse_table_name(name: object) -> tuple[str, str]:
    """``"schema.table"`` → ``("schema", "table")``; anything else is a DefinitionError."""
    if not isinstance(name, str) or name.count(".") != 1:
        raise DefinitionError(
            f'source_table requires schema.table format, got {name!r} (write e.g. "public.users")'
        )
    schema, table = name.split(".")
    if not schema or not table:
        raise DefinitionError(f"source_table requires schema.table format, got {name!r}")
    return check_identifier(schema, "source schema"), check_identifier(table, "source table")


@dataclass(frozen=True)
class Source:
    """A PostgreSQL query or table. Build it with the two constructors below."""

    kind: str  # "query" | "table"
    connection: Any  # Connection | str (a configured connection name)
    query: str | None = None
    schema: str | None = None
    table: str | None = None
    column_map: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def postgres_query(cls, conn: Connection | str, sql: str) -> Source:
        """Rows of ``sql`` run on ``conn``; its column names must match the target's."""
        if not isinstance(sql, str) or not sql.strip().rstrip(";").strip():
            raise DefinitionError(f"Source.postgres_query needs a SQL string, got {sql!r}")
        return cls("query", _check_conn(conn), query=sql)

    @classmethod
    def postgres_table(
        cls,
        conn: Connection | str,
        table: str,
        column_map: Mapping[str, str] | None = None,
    ) -> Source:
        """Every row of ``schema.table``; ``column_map`` maps target → source column names."""
        schema, name = parse_table_name(table)
        mapping = dict(column_map or {})
        for k, v in mapping.items():
            if not isinstance(k, str) or not isinstance(v, str) or not k or not v:
                raise DefinitionError(
                    f"column_map must map target column names to source column names, "
                    f"got {k!r}: {v!r}"
                )
        return cls(
            "table",
            _check_conn(conn),
            schema=schema,
            table=name,
            column_map=MappingProxyType(mapping),
        )

    @property
    def label(self) -> str:
        if self.kind == "table":
            return f"table {self.schema}.{self.table}"
        return "query"

    def resolved_connection(self) -> Connection:
        """The source's :class:`Connection` (a name is looked up in the configuration)."""
        return resolve_connection(self.connection)

    def select_sql(self, target: TableSpec) -> str:
        """The SELECT whose columns are named like the target's declared columns."""
        if self.kind == "query":
            assert self.query is not None
            return _strip_query(self.query)
        unknown = set(self.column_map) - {c.name for c in target.declared_columns}
        if unknown:
            raise DefinitionError(
                f"column_map names {', '.join(sorted(unknown))}, which target "
                f"{target.qualified_name} does not declare"
            )
        items = []
        for col in target.declared_columns:
            src = self.column_map.get(col.name, col.name)
            if src == col.name:
                items.append(sql.Identifier(col.name))
            else:
                items.append(
                    sql.SQL("{} AS {}").format(sql.Identifier(src), sql.Identifier(col.name))
                )
        return (
            sql.SQL("SELECT {} FROM {}")
            .format(sql.SQL(", ").join(items), sql.Identifier(self.schema or "", self.table or ""))
            .as_string(None)
        )

    def source_column(self, target_column: str) -> str:
        """The source column feeding ``target_column`` (after ``column_map``)."""
        return self.column_map.get(target_column, target_column)


def _strip_query(text: str) -> str:
    text = text.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def _check_conn(conn: object) -> object:
    if isinstance(conn, str):
        if not conn:
            raise DefinitionError("a connection name must be a non-empty string")
        return conn
    if hasattr(conn, "dsn") and hasattr(conn, "open"):
        return conn
    raise DefinitionError(
        f"expected a connection (ematix_flow.connect(...)) or a connection name, got {conn!r}"
    )


def resolve_connection(conn: Connection | str) -> Connection:
    """A :class:`Connection` from a connection or a configured name."""
    if isinstance(conn, str):
        from ematix_flow.config import connect

        return connect(conn)
    return conn
