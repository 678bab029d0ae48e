"""Spec §4 "Today": the Phase-15 SCD2 feature pipeline runs as written (two databases)."""

from __future__ import annotations

from typing import Any

import pytest
from spec_examples import SECTION_4_TODAY, load

from ematix_flow import pipeline

pytestmark = pytest.mark.db


def test_spec_today_example(env: Any) -> None:
    env.src(
        "CREATE SCHEMA events",
        "CREATE TABLE events.purchases (user_id bigint, event_ts timestamptz, amount numeric, "
        "is_sub boolean)",
        "INSERT INTO events.purchases VALUES (1, '2026-01-01 10:00Z', 5.5, false), "
        "(1, '2026-01-01 11:00Z', 4.5, true), (2, '2026-01-02 09:00Z', 1, false)",
    )
    name = "user_purchase_features_sync"  # as the spec registers it

    try:
        load(SECTION_4_TODAY, OLTP_URL=env.dbs.source_url, WAREHOUSE_URL=env.dbs.warehouse_url)
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
