"""scd2 with an ``event_timestamp_column`` and no ``compare_columns=``: a source row
whose only change is a later event time is not a new version (spec §1, §4)."""

from __future__ import annotations

from typing import Any

import pytest

from ematix_flow import pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text, TimestampTZ

pytestmark = pytest.mark.db


class Customer(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "customer"
    customer_id = Column(BigInt(), nullable=False, primary_key=True)
    email = Column(Text(), nullable=False)
    last_seen = Column(TimestampTZ(), nullable=False)


@pytest.mark.parametrize("path", ["same_db", "cross_db"])
def test_a_new_event_time_alone_is_not_a_new_version(env: Any, path: str) -> None:
    env.src(
        "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL,"
        " last_seen timestamptz NOT NULL)",
        "INSERT INTO users VALUES (1, 'a@x', '2026-01-01 10:00+00'),"
        " (2, 'b@x', '2026-01-01 10:00+00')",
    )
    conn = env.source if path == "cross_db" else env.warehouse
    if path == "same_db":
        env.wh(
            "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL,"
            " last_seen timestamptz NOT NULL)",
            "INSERT INTO users VALUES (1, 'a@x', '2026-01-01 10:00+00'),"
            " (2, 'b@x', '2026-01-01 10:00+00')",
        )
    source = Source.postgres_query(conn, "SELECT id AS customer_id, email, last_seen FROM users")

    def sync() -> dict[str, Any]:
        return pipeline.sync(
            target=Customer,
            source=source,
            target_connection=env.warehouse,
            mode="scd2",
            event_timestamp_column="last_seen",
        )

    assert sync()["rows_inserted"] == 2
    change = (
        "UPDATE users SET last_seen = '2026-01-02 10:00+00'",
        "UPDATE users SET email = 'b2@x', last_seen = '2026-01-03 10:00+00' WHERE id = 2",
    )
    (env.src if path == "cross_db" else env.wh)(*change)
    second = sync()
    # Key 2 gets a new version (counted as updated); key 1 only moved its event time.
    assert (second["rows_inserted"], second["rows_updated"], second["rows_unchanged"]) == (
        0,
        1,
        1,
    )
    assert env.table("wh", "customer", "customer_id, valid_from", "customer_id, email") == [
        (1, "a@x"),
        (2, "b@x"),
        (2, "b2@x"),
    ]
