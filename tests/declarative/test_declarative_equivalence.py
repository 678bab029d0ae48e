"""The spec's side-by-side examples: the decorator form (§2, §4 "After") plans exactly the
SQL the imperative form (§1, §4 "Today") plans, and runs to the same rows.

The examples are the spec's, from ``tests/spec_examples``, as written: the "Today"
forms pass ``compare_columns=`` explicitly (§1: email, name — not last_seen), the
decorated forms infer them (scd2's default compare columns are the non-key columns
except the ``event_timestamp_column``), and both plan the same SQL.
"""

from __future__ import annotations

from typing import Any

import pytest
from spec_examples import (
    SECTION_1,
    SECTION_2,
    SECTION_4_AFTER,
    SECTION_4_TODAY,
    load,
    with_options,
)

from ematix_flow import pipeline

pytestmark = pytest.mark.db

USERS = """
CREATE SCHEMA source;
CREATE TABLE source.users (
    id bigint PRIMARY KEY, email text NOT NULL, name text, last_seen timestamptz NOT NULL
);
INSERT INTO source.users VALUES
    (1, 'ada@example.com', 'Ada', '2026-01-01 10:00+00'),
    (2, 'bob@example.com', NULL, '2026-01-02 11:00+00');
"""

PURCHASES = """
CREATE SCHEMA events;
CREATE TABLE events.purchases (
    user_id bigint NOT NULL, event_ts timestamptz NOT NULL, amount numeric(12, 2),
    is_sub boolean NOT NULL
);
INSERT INTO events.purchases VALUES
    (1, '2026-01-01 10:00+00', 10.00, false),
    (1, '2026-01-01 12:00+00', 5.50, true),
    (2, '2026-01-02 09:00+00', 99.99, false);
"""


def comparable(report: Any) -> list[dict[str, Any]]:
    """Each target's plan, minus what names the connections (a URL here, a name there)
    and minus the reasons (explicit keys= versus inferred keys); the values stay."""
    assert report.ok, report
    out = []
    for result in report.results:
        plan = result.plan.to_dict()
        for volatile in ("target_connection", "source_connection"):
            plan.pop(volatile)
        plan["decisions"] = [
            (d["topic"], d["value"])
            for d in plan["decisions"]
            if d["topic"] not in ("target_connection", "source_connection")
        ]
        out.append(plan)
    return out


def differing(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[str]:
    """The plan fields that differ (for a readable failure)."""
    pairs = zip(a, b, strict=True)
    return [f"{k}: {x[k]!r} != {y[k]!r}" for x, y in pairs for k in x if x[k] != y.get(k)]


def test_section_2_plans_and_runs_like_section_1(named: Any) -> None:
    named.sql("warehouse", USERS)

    load(SECTION_1, WAREHOUSE_URL=named.urls["warehouse"])

    today = comparable(pipeline.preview("customer_sync"))
    pipeline._unregister("customer_sync")

    customer_sync = load(SECTION_2).customer_sync

    after = comparable(customer_sync.preview())
    assert differing(after, today) == []
    assert after == today
    assert [s["sql"] for s in after[0]["steps"]]  # a real plan, not two empty ones
    assert after[0]["keys"] == ["customer_id"]
    assert after[0]["compare_columns"] == ["email", "name"]
    assert after[0]["path"] == "same_db"
    named_plan = customer_sync.preview().results[0].plan
    assert named_plan.decision("target_connection").value.startswith("warehouse → ")

    entry = pipeline.get("customer_sync")
    assert entry.schedule == "0 * * * *"
    assert entry.connections == ("warehouse",)
    assert [t.to_dict() for t in entry.targets] == [
        {
            "table": "warehouse.customer_dim",
            "mode": "scd2",
            "keys": ["customer_id"],
            "connection": "warehouse",
        }
    ]

    report = customer_sync()
    assert report.ok, report
    assert [(r.target, r.status, r.rows_inserted) for r in report.results] == [
        ("warehouse.customer_dim", "succeeded", 2)
    ]
    assert named.rows(
        "warehouse",
        "SELECT customer_id, email, name, valid_from = last_seen FROM warehouse.customer_dim "
        "WHERE is_current ORDER BY 1",
    ) == [(1, "ada@example.com", "Ada", True), (2, "bob@example.com", None, True)]


def test_section_4_after_plans_like_today(named: Any) -> None:
    named.sql("oltp", PURCHASES)

    load(SECTION_4_TODAY, OLTP_URL=named.urls["oltp"], WAREHOUSE_URL=named.urls["warehouse"])

    today = comparable(pipeline.preview("user_purchase_features_sync"))
    pipeline._unregister("user_purchase_features_sync")

    # The §4 forms name their pipelines differently; the comparison needs one name.
    after_form = with_options(SECTION_4_AFTER, name="user_purchase_features_sync")
    sync_user_purchase_features = load(after_form).sync_user_purchase_features

    after = comparable(sync_user_purchase_features.preview())
    assert differing(after, today) == []
    assert after == today
    assert after[0]["path"] == "cross_db"
    assert after[0]["keys"] == ["user_id", "period_start"]
    assert after[0]["compare_columns"] == ["total_spend", "order_count", "is_subscriber"]
    assert pipeline.get("user_purchase_features_sync").connections == ("oltp", "warehouse")

    report = sync_user_purchase_features()
    assert report.ok, report
    assert named.rows(
        "warehouse",
        "SELECT user_id, period_start::text, total_spend::text, order_count, is_subscriber "
        "FROM features.user_purchase_features_v1 WHERE is_current ORDER BY 1, 2",
    ) == [(1, "2026-01-01", "15.50", 2, True), (2, "2026-01-02", "99.99", 1, False)]
