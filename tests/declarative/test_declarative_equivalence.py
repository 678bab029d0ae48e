"""The spec's side-by-side examples: the decorator form (§2, §4 "After") plans exactly the
SQL the imperative form (§1, §4 "Today") plans, and runs to the same rows.

One departure from the spec's text: the decorated forms below pass ``compare_columns=``.
The spec's "Today" forms compare the non-key columns *except* the
``event_timestamp_column`` (§1: email, name — not last_seen), while the engine's default
today is every non-key declared column, timestamp included. Which columns are compared
by default is the engine's decision (``_engine/plan.py``), so the decorator passes it
on unchanged rather than inventing a default the preview would then misreport.
"""

from __future__ import annotations

from typing import Annotated, Any

import pytest

from ematix_flow import _core, ematix, pipeline, pk
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import (
    BigInt,
    Boolean,
    Column,
    Date,
    Numeric,
    String,
    Text,
    TimestampTZ,
)

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

SECTION_1_SQL = "SELECT id AS customer_id, email, name, last_seen FROM source.users"
SECTION_4_SQL = """
            SELECT user_id, date_trunc('day', event_ts)::date AS period_start,
                   sum(amount) AS total_spend, count(*) AS order_count,
                   bool_or(is_sub) AS is_subscriber, max(event_ts) AS last_event_ts
            FROM events.purchases GROUP BY 1, 2
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

    class CustomerDimToday(ManagedTable):
        __schema__ = "warehouse"
        __tablename__ = "customer_dim"

        customer_id = Column(BigInt(), nullable=False, primary_key=True)
        email = Column(String(256), nullable=False)
        name = Column(Text())
        last_seen = Column(TimestampTZ(), nullable=False)

    @pipeline.register(name="customer_sync", schedule="0 * * * *")
    def customer_sync_today():
        conn = _core.connect(named.urls["warehouse"])
        return pipeline.sync(
            target=CustomerDimToday,
            source=Source.postgres_query(conn, SECTION_1_SQL),
            target_connection=conn,
            mode="scd2",
            keys=("customer_id",),
            compare_columns=("email", "name"),
            event_timestamp_column="last_seen",
        )

    today = comparable(pipeline.preview("customer_sync"))
    pipeline._unregister("customer_sync")

    @ematix.table(schema="warehouse")
    class CustomerDim:
        customer_id: Annotated[BigInt, pk()]
        email: String[256]
        name: Text | None
        last_seen: TimestampTZ

    @ematix.pipeline(
        target=CustomerDim,
        schedule="0 * * * *",
        mode="scd2",
        event_timestamp_column="last_seen",
        compare_columns=("email", "name"),  # see the module docstring
    )
    def customer_sync(conn):
        return SECTION_1_SQL

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

    class UserPurchaseFeaturesToday(ManagedTable):
        __schema__ = "features"
        __tablename__ = "user_purchase_features_v1"

        user_id = Column(BigInt(), nullable=False, primary_key=True)
        period_start = Column(Date(), nullable=False, primary_key=True)
        total_spend = Column(Numeric(12, 2))
        order_count = Column(BigInt())
        is_subscriber = Column(Boolean(), nullable=False)
        last_event_ts = Column(TimestampTZ(), nullable=False)

    @pipeline.register(name="user_purchase_features_sync", schedule="0 */6 * * *")
    def sync_user_purchase_features_today():
        src = _core.connect(named.urls["oltp"])
        tgt = _core.connect(named.urls["warehouse"])
        return pipeline.sync(
            target=UserPurchaseFeaturesToday,
            source=Source.postgres_query(src, SECTION_4_SQL),
            target_connection=tgt,
            mode="scd2",
            keys=("user_id", "period_start"),
            compare_columns=("total_spend", "order_count", "is_subscriber"),
            event_timestamp_column="last_event_ts",
        )

    today = comparable(pipeline.preview("user_purchase_features_sync"))
    pipeline._unregister("user_purchase_features_sync")

    @ematix.table(schema="features", name="user_purchase_features_v1")
    class UserPurchaseFeatures:
        user_id: Annotated[BigInt, pk()]
        period_start: Annotated[Date, pk()]
        total_spend: Numeric[12, 2] | None
        order_count: BigInt | None
        is_subscriber: Boolean
        last_event_ts: TimestampTZ

    @ematix.pipeline(
        target=UserPurchaseFeatures,
        schedule="0 */6 * * *",
        mode="scd2",
        event_timestamp_column="last_event_ts",
        source_connection="oltp",
        target_connection="warehouse",
        compare_columns=("total_spend", "order_count", "is_subscriber"),  # see the docstring
        name="user_purchase_features_sync",
    )
    def sync_user_purchase_features(src_conn, tgt_conn):
        return SECTION_4_SQL

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
