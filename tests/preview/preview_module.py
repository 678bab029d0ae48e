"""The pipelines module the preview tests write into the working directory (text, so
``flow --module`` imports it the way a user's module is imported)."""

from __future__ import annotations

MODULE = """
from datetime import timedelta
from typing import Annotated

from ematix_flow import ematix, pk
from ematix_flow.types import BigInt, Text, TimestampTZ


@ematix.table(schema="mart")
class CustomerLog:
    customer_id: BigInt
    email: Text
    updated_at: TimestampTZ


@ematix.table(schema="mart")
class Customer:
    customer_id: Annotated[BigInt, pk()]
    email: Text
    name: Text | None
    updated_at: TimestampTZ


@ematix.table(schema="mart")
class CustomerStrict:
    customer_id: Annotated[BigInt, pk()]
    email: Text
    name: Text


@ematix.table(schema="mart")
class CustomerHistory:
    customer_id: Annotated[BigInt, pk()]
    email: Text
    name: Text | None
    updated_at: TimestampTZ


@ematix.table(schema="hist")
class LocalHistory:
    customer_id: Annotated[BigInt, pk()]
    email: Text
    name: Text | None
    updated_at: TimestampTZ


@ematix.pipeline(
    targets=[
        ematix.target(CustomerLog, mode="append", incremental_column="updated_at"),
        ematix.target(Customer, mode="merge", handle_deletes="hard"),
        ematix.target(CustomerStrict, mode="merge"),
        ematix.target(
            CustomerHistory, mode="scd2", handle_deletes="hard", ttl=timedelta(days=3650)
        ),
    ],
    source_connection="oltp",
    schedule="0 1 * * *",
    name="pv_fanout",
)
def pv_fanout(src_conn, tgt_conn):
    return "SELECT id AS customer_id, email, name, updated_at FROM app.customers"


@ematix.pipeline(
    target=LocalHistory,
    mode="scd2",
    handle_deletes="hard",
    ttl=timedelta(days=3650),
    event_timestamp_column="updated_at",
    schedule="*/5 * * * *",
    name="pv_history",
)
def pv_history(conn):
    return "SELECT id AS customer_id, email, name, updated_at FROM crm.customers"
"""

CUSTOMERS = """
CREATE TABLE {table} (
    id bigint PRIMARY KEY, email text NOT NULL, name text, updated_at timestamptz NOT NULL
);
INSERT INTO {table} VALUES
    (1, 'ada@example.com', 'Ada', '2026-01-01 10:00+00'),
    (2, 'bob@example.com', 'Bob', '2026-01-02 10:00+00'),
    (3, 'cy@example.com', 'Cy', '2026-01-03 10:00+00');
"""

#: After the first run: one row changed, one deleted, one new (without a name, which
#: mart.customer_strict cannot take).
CHANGES = """
UPDATE {table} SET email = 'ada@new.example.com', updated_at = '2026-02-01 10:00+00'
    WHERE id = 1;
DELETE FROM {table} WHERE id = 3;
INSERT INTO {table} VALUES (4, 'dee@example.com', NULL, '2026-02-02 10:00+00');
"""


def setup_sources(project: object) -> None:
    """app.customers in the oltp database, crm.customers in the warehouse."""
    project.sql("oltp", "CREATE SCHEMA app", CUSTOMERS.format(table="app.customers"))  # type: ignore[attr-defined]
    project.sql("warehouse", "CREATE SCHEMA crm", CUSTOMERS.format(table="crm.customers"))  # type: ignore[attr-defined]


def change_sources(project: object) -> None:
    project.sql("oltp", CHANGES.format(table="app.customers"))  # type: ignore[attr-defined]
    project.sql("warehouse", CHANGES.format(table="crm.customers"))  # type: ignore[attr-defined]
