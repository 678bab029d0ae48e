"""Decorated pipelines at run time, on real databases: what the function returns, the
``source_table=`` mirror, multi-target semantics, async bodies, precedence of options."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any

import pytest

from ematix_flow import ematix, natural_key, pipeline, pk
from ematix_flow._errors import DefinitionError
from ematix_flow.source import Source
from ematix_flow.types import BigInt, Date, Numeric, Text, TimestampTZ

pytestmark = pytest.mark.db

OLTP = """
CREATE TABLE public.users (id bigint PRIMARY KEY, email text NOT NULL,
                           created_at timestamptz NOT NULL);
INSERT INTO public.users VALUES
    (10, 'ann@example.com', '2025-12-01 09:00+00'),
    (11, 'ben@example.com', '2025-12-02 09:30+00');
CREATE SCHEMA app;
CREATE TABLE app.orders (user_id bigint, ordered_at timestamptz, amount numeric(12, 2));
INSERT INTO app.orders VALUES
    (10, '2026-01-01 08:00+00', 12.50), (10, '2026-01-02 18:00+00', 7.50),
    (11, '2026-01-02 09:00+00', 99.99);
"""
ORDERS_BY_DAY = """
    SELECT user_id, ordered_at::date AS day, sum(amount) AS spend
    FROM app.orders GROUP BY 1, 2
"""


@ematix.table(schema="crm")
class Customer:
    customer_id: Annotated[BigInt, pk()]
    email: Text
    signup_at: TimestampTZ


@ematix.table(schema="features")
class DailySpend:
    user_id: Annotated[BigInt, pk()]
    day: Annotated[Date, pk()]
    spend: Numeric[12, 2] | None


@ematix.table(schema="features")
class UserSpend:
    """Keyed by user only: the by-day source has several rows per user, so it fails."""

    user_id: Annotated[BigInt, pk()]
    spend: Numeric[12, 2] | None


@ematix.table(schema="features")
class SpendLog:
    user_id: BigInt
    day: Date
    spend: Numeric[12, 2] | None


CUSTOMERS = "SELECT id AS customer_id, email, created_at AS signup_at FROM public.users"


def customers(named: Any, which: str = "warehouse") -> list[tuple[Any, ...]]:
    return named.rows(which, "SELECT customer_id, email FROM crm.customer ORDER BY 1")


ANN_BEN = [(10, "ann@example.com"), (11, "ben@example.com")]


# -- what the function returns ----------------------------------------------------------


def test_string_return_cross_db(named: Any) -> None:
    named.sql("oltp", OLTP)
    seen: list[tuple[str | None, str | None]] = []

    @ematix.pipeline(target=Customer, mode="merge", source_connection="oltp")
    def sync_customers(src_conn, tgt_conn):
        seen.append((src_conn.name, tgt_conn.name))
        return CUSTOMERS

    report = sync_customers()
    assert report.ok, report
    assert seen == [("oltp", "warehouse")]
    assert report.results[0].path == "cross_db"
    assert customers(named) == ANN_BEN
    assert named.history() == [("sync_customers", "crm.customer", "succeeded")]


def test_one_parameter_reads_where_the_target_lives(named: Any) -> None:
    named.sql("warehouse", OLTP)

    @ematix.pipeline(target=Customer, mode="merge")
    def sync_customers(conn):
        assert conn.name == "warehouse"
        return CUSTOMERS

    report = sync_customers()
    assert report.ok, report
    assert report.results[0].path == "same_db"
    assert customers(named) == ANN_BEN


def test_one_parameter_with_source_connection(named: Any) -> None:
    named.sql("oltp", OLTP)

    @ematix.pipeline(target=Customer, mode="merge", source_connection="oltp")
    def sync_customers(conn):
        assert conn.name == "oltp"
        return CUSTOMERS

    assert sync_customers().ok
    assert customers(named) == ANN_BEN


def test_source_return_is_used_as_is(named: Any) -> None:
    named.sql("oltp", OLTP)

    @ematix.pipeline(target=Customer, mode="merge", source_connection="oltp")
    def sync_customers(src_conn, tgt_conn):
        return Source.postgres_table(
            src_conn, "public.users", column_map={"customer_id": "id", "signup_at": "created_at"}
        )

    assert sync_customers().ok
    assert customers(named) == ANN_BEN


def test_dict_return_is_the_users_own_sync(named: Any) -> None:
    named.sql("oltp", OLTP)

    @ematix.pipeline(target=Customer, mode="merge", source_connection="oltp")
    def sync_customers(src_conn, tgt_conn):
        return pipeline.sync(
            target=Customer,
            source=Source.postgres_query(src_conn, CUSTOMERS + " WHERE id = 10"),
            target_connection=tgt_conn,
            mode="append",
        )

    report = sync_customers()
    assert report.ok, report
    assert [(r.mode, r.rows_inserted) for r in report.results] == [("append", 1)]
    assert customers(named) == [(10, "ann@example.com")]


def test_none_return_without_source_table(named: Any) -> None:
    @ematix.pipeline(target=Customer, mode="merge")
    def sync_customers(conn):
        pass

    for report in (sync_customers(), sync_customers.preview(), sync_customers.dry_run()):
        assert not report.ok
        assert report.error == (
            "pipeline sync_customers has no source declaration: sync_customers() returned "
            "None and no source_table= is set. Return the SQL to read (a string) or a "
            'Source, or pass source_table="schema.table"'
        )
    assert not named.exists("warehouse", "crm.customer")


def test_unexpected_return_type(named: Any) -> None:
    @ematix.pipeline(target=Customer, mode="merge")
    def sync_customers(conn):
        return 42

    report = sync_customers()
    assert report.error == (
        "pipeline sync_customers: sync_customers() returned int; return a SQL string, a "
        "Source, the dict of your own pipeline.sync(...), or None together with source_table="
    )


# -- source_table= and column_map= --------------------------------------------------------


def test_source_table_mirror_cross_db(named: Any) -> None:
    named.sql("oltp", OLTP)

    @ematix.pipeline(
        target=Customer,
        source_table="public.users",
        column_map={"customer_id": "id", "signup_at": "created_at"},
        source_connection="oltp",
        schedule="0 * * * *",
        mode="merge",
    )
    def sync_customers():
        pass

    preview = sync_customers.preview()
    assert preview.ok, preview
    assert preview.results[0].plan.source_sql == (
        'SELECT "id" AS "customer_id", "email", "created_at" AS "signup_at" FROM "public"."users"'
    )
    assert not named.exists("warehouse", "crm.customer")  # a preview writes nothing
    assert sync_customers().ok
    assert customers(named) == ANN_BEN


def test_source_table_missing_column_is_named(named: Any) -> None:
    named.sql("oltp", OLTP)

    @ematix.pipeline(
        target=Customer,
        source_table="public.users",
        column_map={"customer_id": "id"},  # signup_at is not mapped: users has no such column
        source_connection="oltp",
        mode="merge",
    )
    def sync_customers():
        pass

    for report in (sync_customers.dry_run(), sync_customers()):
        assert not report.ok
        (result,) = report.results
        assert "signup_at" in result.error, result.error
    assert not named.exists("warehouse", "crm.customer")


def test_function_body_wins_over_source_table(named: Any) -> None:
    named.sql("oltp", OLTP)

    @ematix.pipeline(
        target=Customer, source_table="public.nothing_here", source_connection="oltp", mode="merge"
    )
    def sync_customers(conn):
        return CUSTOMERS + " WHERE id = 11"

    assert sync_customers().ok
    assert customers(named) == [(11, "ben@example.com")]


# -- multi-target ---------------------------------------------------------------------------


def _three_targets(**kwargs: Any) -> Any:
    @ematix.pipeline(
        targets=[
            ematix.target(DailySpend, mode="merge"),
            ematix.target(UserSpend, mode="merge"),  # duplicate keys in the source: fails
            ematix.target(SpendLog, mode="append"),
        ],
        source_connection="oltp",
        schedule="0 1 * * *",
        **kwargs,
    )
    def sync_spend(src_conn, tgt_conn):
        calls.append(tgt_conn.name)
        return ORDERS_BY_DAY

    calls: list[str] = []
    sync_spend.calls = calls  # type: ignore[attr-defined]
    return sync_spend


def _daily(named: Any, which: str = "warehouse") -> list[tuple[Any, ...]]:
    return named.rows(
        which, "SELECT user_id, day::text, spend::text FROM features.daily_spend ORDER BY 1, 2"
    )


DAILY = [(10, "2026-01-01", "12.50"), (10, "2026-01-02", "7.50"), (11, "2026-01-02", "99.99")]


def test_multi_target_halts_on_first_failure(named: Any) -> None:
    named.sql("oltp", OLTP)
    sync_spend = _three_targets()

    report = sync_spend()
    assert not report.ok
    assert [(r.target, r.status) for r in report.results] == [
        ("features.daily_spend", "succeeded"),
        ("features.user_spend", "failed"),
        ("features.spend_log", "not_run"),
    ]
    assert "user_id" in report.results[1].error
    assert "features.user_spend failed before it" in report.results[2].error
    assert sync_spend.calls == ["warehouse", "warehouse"]  # the source re-runs per target
    assert _daily(named) == DAILY  # target 1 stays committed
    assert not named.exists("warehouse", "features.spend_log")  # target 3 never ran
    assert named.history() == [
        ("sync_spend", "features.daily_spend", "succeeded"),
        ("sync_spend", "features.user_spend", "failed"),
        ("sync_spend", "features.spend_log", "not_run"),
    ]


def test_multi_target_continue_on_failure(named: Any) -> None:
    named.sql("oltp", OLTP)
    sync_spend = _three_targets(continue_on_failure=True)
    assert pipeline.get("sync_spend").continue_on_failure is True

    for _fire in range(2):
        report = sync_spend()
        assert not report.ok
        assert [r.status for r in report.results] == ["succeeded", "failed", "succeeded"]
    assert _daily(named) == DAILY
    assert named.rows("warehouse", "SELECT count(*) FROM features.spend_log") == [(6,)]
    assert not named.exists("warehouse", "features.user_spend") or named.rows(
        "warehouse", "SELECT count(*) FROM features.user_spend"
    ) == [(0,)]
    # exactly one run_history row per target per fire
    assert named.rows(
        "warehouse",
        "SELECT target, status, count(*) FROM ematix_flow.run_history GROUP BY 1, 2 ORDER BY 1",
    ) == [
        ("features.daily_spend", "succeeded", 2),
        ("features.spend_log", "succeeded", 2),
        ("features.user_spend", "failed", 2),
    ]


def test_multi_target_dry_run_continues_through_every_target(named: Any) -> None:
    named.sql("oltp", OLTP)
    sync_spend = _three_targets()  # halts on first failure when it really runs

    report = sync_spend.dry_run()
    assert report.action == "dry_run"
    assert [r.status for r in report.results] == ["succeeded", "failed", "succeeded"]
    assert all(r.dry_run for r in report.results)
    assert report.results[0].rows_inserted == 3
    for table in ("features.daily_spend", "features.user_spend", "features.spend_log"):
        assert not named.exists("warehouse", table)
    assert named.history() == []


def test_multi_target_per_target_connection(named: Any) -> None:
    named.sql("oltp", OLTP)
    named.add("archive")

    @ematix.pipeline(
        targets=[
            ematix.target(DailySpend, mode="merge"),
            ematix.target(SpendLog, mode="append", target_connection="archive"),
        ],
        source_connection="oltp",
    )
    def sync_spend(src_conn, tgt_conn):
        calls.append((src_conn.name, tgt_conn.name))
        return ORDERS_BY_DAY

    calls: list[tuple[str, str]] = []
    assert pipeline.get("sync_spend").connections == ("oltp", "warehouse", "archive")
    report = sync_spend()
    assert report.ok, report
    assert calls == [("oltp", "warehouse"), ("oltp", "archive")]
    assert _daily(named) == DAILY
    assert not named.exists("warehouse", "features.spend_log")
    assert named.rows("archive", "SELECT count(*) FROM features.spend_log") == [(3,)]
    assert named.history("warehouse") == [("sync_spend", "features.daily_spend", "succeeded")]
    assert named.history("archive") == [("sync_spend", "features.spend_log", "succeeded")]


def test_connections_are_resolved_when_the_pipeline_runs(named: Any, monkeypatch: Any) -> None:
    # Declared while "later" is not configured anywhere: import time needs no credentials.
    @ematix.pipeline(target=Customer, mode="merge", target_connection="later")
    def sync_customers(conn):
        return CUSTOMERS

    report = sync_customers()
    assert not report.ok
    assert "later" in report.error and "EMATIX_FLOW_DSN_LATER" in report.error

    named.sql("warehouse", OLTP)
    monkeypatch.setenv("EMATIX_FLOW_DSN_LATER", named.urls["warehouse"])
    assert sync_customers().ok
    assert customers(named) == ANN_BEN


# -- async bodies ---------------------------------------------------------------------------


def test_async_body_same_db(named: Any) -> None:
    named.sql("warehouse", OLTP)

    @ematix.pipeline(target=Customer, mode="merge")
    async def sync_customers(conn):
        await asyncio.sleep(0)
        return CUSTOMERS

    assert sync_customers.spec.is_async
    assert sync_customers().ok
    assert customers(named) == ANN_BEN


def test_async_body_cross_db(named: Any) -> None:
    named.sql("oltp", OLTP)

    @ematix.pipeline(target=Customer, mode="merge", source_connection="oltp")
    async def sync_customers(src_conn, tgt_conn):
        where = await asyncio.to_thread(lambda: " WHERE id = 10")
        return CUSTOMERS + where

    report = sync_customers()
    assert report.ok, report
    assert report.results[0].path == "cross_db"
    assert customers(named) == [(10, "ann@example.com")]


async def test_async_body_called_from_a_running_event_loop(named: Any) -> None:
    named.sql("oltp", OLTP)

    @ematix.pipeline(target=Customer, mode="merge", source_connection="oltp")
    async def sync_customers(src_conn, tgt_conn):
        await asyncio.sleep(0)
        return CUSTOMERS

    report = sync_customers()  # asyncio.run cannot nest: the body runs on its own thread
    assert report.ok, report
    assert customers(named) == ANN_BEN

    @ematix.pipeline(target=Customer, mode="merge", source_connection="oltp")
    async def own_sync(src_conn, tgt_conn):
        return pipeline.sync(
            target=Customer,
            source=Source.postgres_query(src_conn, CUSTOMERS),
            target_connection=tgt_conn,
            mode="merge",
        )

    preview = own_sync.preview()  # the body's own sync sees the preview action and report
    assert [(r.target, r.status) for r in preview.results] == [("crm.customer", "planned")]


# -- option precedence ----------------------------------------------------------------------


def test_option_precedence_target_then_pipeline_then_table(named: Any) -> None:
    @ematix.table(schema="features", mode="scd2", ttl=timedelta(days=7), handle_deletes="soft")
    class Score:
        user_id: Annotated[BigInt, pk()]
        email: Annotated[Text, natural_key()]
        score: Numeric[6, 3] | None

    @ematix.pipeline(
        targets=[
            Score,
            ematix.target(
                Score,
                mode="scd2",
                keys=("user_id",),
                ttl=timedelta(days=1),
                target_connection="other",
            ),
        ],
        handle_deletes="hard",
        compare_columns=("score",),
    )
    def scores(conn):
        return "SELECT 1 AS user_id, 'a' AS email, 0.5 AS score"

    first, second = scores.spec.targets
    assert dict(first.options) == {
        "mode": "scd2",  # table default
        "compare_columns": ("score",),  # pipeline
        "ttl": timedelta(days=7),  # table default
        "handle_deletes": "hard",  # pipeline over table
    }
    assert (first.keys, first.keys_origin) == (("email",), "natural_key()")
    assert first.connection == "warehouse"
    assert second.connection == "other"
    assert (second.keys, second.keys_origin) == (("user_id",), "explicit keys=")
    assert second.options["ttl"] == timedelta(days=1)  # target over table
    assert second.options["handle_deletes"] == "hard"

    # A table default that does not fit the mode a pipeline picks fails at decoration.
    with pytest.raises(DefinitionError, match=r"ttl= only applies to mode='scd2'"):

        @ematix.pipeline(target=Score, mode="merge")
        def scores_merge(conn):
            return "SELECT 1"

    assert scores.name == "scores"
    assert repr(scores) == "<pipeline scores → features.score, features.score>"


def test_name_and_wrapped_function() -> None:
    @ematix.pipeline(target=Customer, mode="merge", name="customers_hourly", schedule="0 * * * *")
    def sync_customers(conn):
        """Customers, hourly."""
        return CUSTOMERS

    assert sync_customers.name == "customers_hourly"
    assert sync_customers.__doc__ == "Customers, hourly."
    assert sync_customers.__wrapped__(None) == CUSTOMERS
    entry = pipeline.get("customers_hourly")
    assert entry.schedule == "0 * * * *"
    assert entry.module == __name__
    assert entry.qualname.endswith("sync_customers")
