"""Spec §4 "Today": the Phase-15 SCD2 feature pipeline runs as written (two databases)."""

from __future__ import annotations

from typing import Any

import pytest

from ematix_flow import _core, pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Boolean, Column, Date, Numeric, TimestampTZ

pytestmark = pytest.mark.db


class UserPurchaseFeatures(ManagedTable):
    __schema__ = "features"
    __tablename__ = "user_purchase_features_v1"

    user_id = Column(BigInt(), nullable=False, primary_key=True)
    period_start = Column(Date(), nullable=False, primary_key=True)
    total_spend = Column(Numeric(12, 2))
    order_count = Column(BigInt())
    is_subscriber = Column(Boolean(), nullable=False)
    last_event_ts = Column(TimestampTZ(), nullable=False)


def test_spec_today_example(env: Any) -> None:
    env.src(
        "CREATE SCHEMA events",
        "CREATE TABLE events.purchases (user_id bigint, event_ts timestamptz, amount numeric, "
        "is_sub boolean)",
        "INSERT INTO events.purchases VALUES (1, '2026-01-01 10:00Z', 5.5, false), "
        "(1, '2026-01-01 11:00Z', 4.5, true), (2, '2026-01-02 09:00Z', 1, false)",
    )
    name = "user_purchase_features_sync_test"

    @pipeline.register(name=name, schedule="0 */6 * * *")
    def sync_user_purchase_features() -> dict:
        src = _core.connect(env.dbs.source_url)
        tgt = _core.connect(env.dbs.warehouse_url)
        return pipeline.sync(
            target=UserPurchaseFeatures,
            source=Source.postgres_query(
                src,
                """
                SELECT user_id, date_trunc('day', event_ts)::date AS period_start,
                       sum(amount) AS total_spend, count(*) AS order_count,
                       bool_or(is_sub) AS is_subscriber, max(event_ts) AS last_event_ts
                FROM events.purchases GROUP BY 1, 2
                """,
            ),
            target_connection=tgt,
            mode="scd2",
            keys=("user_id", "period_start"),
            compare_columns=("total_spend", "order_count", "is_subscriber"),
            event_timestamp_column="last_event_ts",
        )

    try:
        first = pipeline.run(name)
        env.src("INSERT INTO events.purchases VALUES (2, '2026-01-02 12:00Z', 2, true)")
        second = pipeline.run(name)
    finally:
        pipeline._unregister(name)
    assert first.ok and second.ok
    assert first.results[0].path == "cross_db"
    assert (second.results[0].rows_updated, second.results[0].rows_unchanged) == (1, 1)
    rows = env.rows(
        "SELECT user_id, total_spend, order_count, is_subscriber, valid_from, is_current "
        "FROM features.user_purchase_features_v1 ORDER BY user_id, valid_from"
    )
    assert [(*r[:4], r[5]) for r in rows] == [
        (1, 10, 2, True, True),
        (2, 1, 1, False, False),
        (2, 3, 2, True, True),
    ]
    assert str(rows[2][4]) == "2026-01-02 12:00:00+00:00"  # valid_from = last_event_ts
