"""Example pipelines written by `flow demo`: an OLTP database ("oltp": app.users,
events.purchases) feeding a warehouse ("warehouse").

- customers_mirror        merge: a 1:1 mirror of app.users, no function body
- user_purchase_features  scd2: daily purchase features with history, across databases
- user_value_fanout       one source query, three targets (scd1, scd2, append)

The connection names "oltp" and "warehouse" are resolved when a pipeline runs, e.g. from
EMATIX_FLOW_DSN_OLTP and EMATIX_FLOW_DSN_WAREHOUSE; nothing here holds a DSN.
"""

from typing import Annotated

from ematix_flow import ematix, pk
from ematix_flow.types import BigInt, Boolean, Date, Numeric, Text, TimestampTZ

# --- 1. A 1:1 mirror: source_table + column_map, no SQL at all ----------------------


@ematix.table(schema="crm", name="customers")
class Customer:
    customer_id: Annotated[BigInt, pk()]
    email: Text
    full_name: Text | None
    country: Text
    signup_at: TimestampTZ


@ematix.pipeline(
    target=Customer,
    source_table="app.users",
    column_map={"customer_id": "id", "signup_at": "created_at"},
    mode="merge",
    handle_deletes="hard",  # accounts closed in the source disappear here too
    schedule="*/15 * * * *",
    source_connection="oltp",
    target_connection="warehouse",
)
def customers_mirror():
    pass


# --- 2. An SCD2 feature view across databases ---------------------------------------


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
)
def user_purchase_features(src_conn, tgt_conn):
    return """
        SELECT user_id, (event_ts AT TIME ZONE 'UTC')::date AS period_start,
               sum(amount) AS total_spend, count(*) AS order_count,
               bool_or(is_sub) AS is_subscriber, max(event_ts) AS last_event_ts
        FROM events.purchases GROUP BY 1, 2
    """


# --- 3. One source, many targets ----------------------------------------------------


@ematix.table(schema="features", name="user_lifetime_value")
class UserLifetimeValue:
    user_id: Annotated[BigInt, pk()]
    lifetime_orders: BigInt
    lifetime_spend: Numeric[12, 2]
    tier: Text


@ematix.table(schema="features", name="user_segments")
class UserSegment:
    user_id: Annotated[BigInt, pk()]
    country: Text
    is_subscriber: Boolean
    tier: Text


@ematix.table(schema="analytics", name="user_value_snapshots")
class UserValueSnapshot:
    user_id: BigInt
    lifetime_spend: Numeric[12, 2]
    tier: Text


@ematix.pipeline(
    targets=[
        ematix.target(UserLifetimeValue, mode="scd1"),
        ematix.target(UserSegment, mode="scd2"),
        ematix.target(UserValueSnapshot, mode="append"),
    ],
    schedule="0 1 * * *",
    source_connection="oltp",
    target_connection="warehouse",
)
def user_value_fanout(src_conn, tgt_conn):
    return """
        SELECT u.id AS user_id, u.country, u.is_subscriber,
               count(p.purchase_id) AS lifetime_orders,
               coalesce(sum(p.amount), 0) AS lifetime_spend,
               CASE WHEN coalesce(sum(p.amount), 0) >= 1000 THEN 'gold'
                    WHEN coalesce(sum(p.amount), 0) >= 300 THEN 'silver'
                    ELSE 'bronze' END AS tier
        FROM app.users AS u
        LEFT JOIN events.purchases AS p ON p.user_id = u.id
        GROUP BY u.id
    """
