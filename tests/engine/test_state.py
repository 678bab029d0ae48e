"""State: run history rows, watermarks across incremental runs, the advisory lock,
dry runs that leave nothing behind."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ematix_flow import pipeline
from ematix_flow._engine import state
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text, TimestampTZ

pytestmark = pytest.mark.db


class Ev(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "ev"
    id = Column(BigInt(), nullable=False, primary_key=True)
    body = Column(Text())


def ev_sync(env: Any, path: str, mode: str = "append", query: str = "SELECT * FROM ev") -> dict:
    conn = env.source if path == "cross_db" else env.warehouse
    return pipeline.sync(
        target=Ev,
        source=Source.postgres_query(conn, query),
        target_connection=env.warehouse,
        mode=mode,
        incremental_column="id",
        force_path=path,
    )


@pytest.mark.parametrize("path", ["same_db", "cross_db"])
@pytest.mark.parametrize("mode", ["append", "merge"])
def test_incremental_runs_lose_and_double_nothing(env: Any, path: str, mode: str) -> None:
    run = env.src if path == "cross_db" else env.wh
    run("CREATE TABLE ev (id bigint, body text)")
    loaded = []
    for batch in ([1, 2, 3], [4, 5], [], [6], []):
        for i in batch:
            run("INSERT INTO ev VALUES (%s, %s)", params=(i, f"row {i}"))
        result = ev_sync(env, path, mode)
        loaded.append(result["rows_inserted"])
    assert loaded == [3, 2, 0, 1, 0]
    assert env.rows("SELECT id FROM wh.ev ORDER BY id") == [(i,) for i in range(1, 7)]
    assert env.rows("SELECT column_name, value FROM ematix_flow.watermarks") == [("id", "6")]


def test_watermark_filter_is_pushed_into_the_copy(env: Any) -> None:
    from ematix_flow._engine import TargetOptions, plan

    env.src("CREATE TABLE ev (id bigint, body text)", "INSERT INTO ev VALUES (1, 'a')")
    opts = TargetOptions(table=Ev.__table_spec__, mode="append", incremental_column="id")
    src = Source.postgres_query(env.source, "SELECT * FROM ev")
    before = plan(opts, src, env.warehouse, pipeline="(ad hoc)")
    assert before.watermark_before is None
    assert "WHERE" not in before.steps[-4].sql.split("FROM (")[-1]
    ev_sync(env, "cross_db")
    after = plan(opts, src, env.warehouse, pipeline="(ad hoc)")
    assert after.watermark_before == "1"
    copy = next(s for s in after.steps if s.kind == "copy")
    assert 'WHERE (CAST("q"."id" AS bigint) >= CAST(current_setting(' in copy.sql
    env.src("INSERT INTO ev VALUES (2, 'b')")
    assert ev_sync(env, "cross_db")["rows_inserted"] == 1
    # The planner estimates the rows above the watermark (a stable expression, not a
    # subquery it cannot look into), so a large source is read by its index.
    env.src(
        "INSERT INTO ev SELECT g, 'x' FROM generate_series(3, 200000) AS g",
        "CREATE INDEX ON ev (id)",
        "ANALYZE ev",
    )
    query = copy.sql.split("COPY (", 1)[1].rsplit(") TO STDOUT", 1)[0]
    with psycopg.connect(env.dbs.source_url, autocommit=True) as c:

        def estimate(watermark: str) -> tuple[str, int]:
            c.execute("SELECT set_config('ematix_flow.watermark', %s, false)", (watermark,))
            plan = c.execute("EXPLAIN (FORMAT JSON) " + query).fetchone()[0][0]["Plan"]
            return json.dumps(plan), int(plan["Plan Rows"])

        shown, _ = estimate("199990")
        assert "Index" in shown, shown
        # and a watermark far back is estimated as the most of the table it is
        _, rows = estimate("10")
        assert rows > 150_000, rows


def test_one_run_history_row_per_target_per_run(env: Any) -> None:
    env.wh("CREATE TABLE ev (id bigint, body text)", "INSERT INTO ev VALUES (1, 'a')")
    first = ev_sync(env, "same_db", "merge")
    ev_sync(env, "same_db", "merge")
    rows = env.rows(
        "SELECT pipeline, target, mode, status, path, batch_id::text, rows_inserted, "
        "rows_unchanged, error, finished_at >= started_at FROM ematix_flow.run_history ORDER BY id"
    )
    assert rows == [
        ("(ad hoc)", "wh.ev", "merge", "succeeded", "same_db", first["batch_id"], 1, 0, None, True),
        # keyed modes re-read the row at the watermark (>=) and leave it unchanged
        ("(ad hoc)", "wh.ev", "merge", "succeeded", "same_db", rows[1][5], 0, 1, None, True),
    ]
    assert env.rows("SELECT version FROM ematix_flow.schema_version") == [(state.STATE_VERSION,)]


def test_dry_run_rolls_everything_back(env: Any) -> None:
    env.wh("CREATE TABLE ev (id bigint, body text)", "INSERT INTO ev VALUES (1, 'a')")

    @pipeline.register(name="dry_ev")
    def dry_ev() -> None:
        ev_sync(env, "same_db", "merge")

    try:
        report = pipeline.dry_run("dry_ev")
    finally:
        pipeline._unregister("dry_ev")
    assert report.ok and report.results[0].rows_inserted == 1 and report.results[0].dry_run
    assert [s.label for s in report.results[0].steps][-1] == "record run"
    assert env.rows("SELECT to_regclass('wh.ev') IS NULL") == [(True,)]
    # not even the state schema of a first run survives a dry run
    assert env.rows("SELECT to_regnamespace('ematix_flow') IS NULL") == [(True,)]
    assert report.to_dict()["targets"][0]["plan"]["steps"]


def hold_lock(url: str, pipeline_name: str, target: str) -> psycopg.Connection:
    conn = psycopg.connect(url)
    conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
        (state.LOCK_NAMESPACE, state.lock_key(pipeline_name, target)),
    )
    return conn


def test_a_locked_target_is_skipped_and_recorded(env: Any) -> None:
    env.wh("CREATE TABLE ev (id bigint, body text)", "INSERT INTO ev VALUES (1, 'a')")
    holder = hold_lock(env.dbs.warehouse_url, "(ad hoc)", "wh.ev")
    try:
        result = ev_sync(env, "same_db", "merge")
    finally:
        holder.rollback()
        holder.close()
    assert result["status"] == "skipped" and result["rows_inserted"] == 0
    assert env.rows("SELECT to_regclass('wh.ev') IS NULL") == [(True,)]
    assert env.rows("SELECT status FROM ematix_flow.run_history") == [("skipped",)]


@pytest.mark.parametrize("path", ["same_db", "cross_db"])
def test_two_concurrent_runs_one_skipped_no_duplicates(env: Any, path: str) -> None:
    run = env.src if path == "cross_db" else env.wh
    run(
        "CREATE TABLE ev (id bigint, body text)",
        "INSERT INTO ev SELECT g, 'x' FROM generate_series(1, 50) g",
    )
    # The first run's source waits on a row lock the test holds, so it sits inside its
    # transaction (holding the advisory lock) until the second run has finished.
    gate = psycopg.connect(env.dbs.source_url if path == "cross_db" else env.dbs.warehouse_url)
    gate.execute("CREATE TABLE IF NOT EXISTS gate (x int)")
    gate.commit()
    gate.execute("LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
    slow = "SELECT ev.* FROM ev WHERE (SELECT count(*) FROM gate) >= 0"
    results: list[dict] = []
    first = threading.Thread(target=lambda: results.append(ev_sync(env, path, "append", slow)))
    first.start()
    try:
        deadline = time.monotonic() + 60
        while not env.rows(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid",
            params=(state.LOCK_NAMESPACE,),
        ):
            assert time.monotonic() < deadline, "the first run never took its lock"
            time.sleep(0.05)
        second = ev_sync(env, path, "append")
    finally:
        gate.rollback()
        gate.close()
        first.join(60)
    assert second["status"] == "skipped"
    assert results[0]["status"] == "succeeded" and results[0]["rows_inserted"] == 50
    assert env.rows("SELECT count(*), count(DISTINCT id) FROM wh.ev") == [(50, 50)]
    assert env.rows("SELECT status FROM ematix_flow.run_history ORDER BY id") == [
        ("skipped",),
        ("succeeded",),
    ]


class Feat(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "feat"
    user_id = Column(BigInt(), nullable=False, primary_key=True)
    score = Column(BigInt())
    event_ts = Column(TimestampTZ(), nullable=False)


def feat_sync(env: Any, **kw: Any) -> dict:
    return pipeline.sync(
        target=Feat,
        source=Source.postgres_query(env.source, "SELECT * FROM f"),
        target_connection=env.warehouse,
        mode="scd2",
        event_timestamp_column="event_ts",
        **kw,
    )


def versions(env: Any) -> list[tuple[Any, ...]]:
    return env.rows(
        "SELECT user_id, score, valid_from, valid_to, is_current FROM wh.feat "
        "ORDER BY user_id, valid_from"
    )


def test_scd2_valid_from_comes_from_the_event_timestamp(env: Any) -> None:
    t1 = datetime(2030, 1, 1, tzinfo=UTC)
    t2 = datetime(2030, 2, 1, tzinfo=UTC)
    env.src("CREATE TABLE f (user_id bigint, score bigint, event_ts timestamptz)")
    env.src("INSERT INTO f VALUES (1, 10, %s)", params=(t1,))
    feat_sync(env)
    env.src("UPDATE f SET score = 11, event_ts = %s", params=(t2,))
    assert feat_sync(env)["rows_updated"] == 1
    env.src("UPDATE f SET score = 12")  # event time did not advance: clamped by 1 µs
    feat_sync(env)
    v = versions(env)
    assert v[:2] == [(1, 10, t1, t2, False), (1, 11, t2, v[2][2], False)]
    assert v[2][1:] == (12, t2 + timedelta(microseconds=1), None, True)


def test_scd2_ttl_expires_stale_versions_once(env: Any) -> None:
    old = datetime(2020, 1, 1, tzinfo=UTC)
    fresh = datetime.now(UTC)
    env.src("CREATE TABLE f (user_id bigint, score bigint, event_ts timestamptz)")
    env.src("INSERT INTO f VALUES (1, 10, %s), (2, 20, %s)", params=(old, fresh))
    feat_sync(env, ttl=timedelta(days=1))
    second = feat_sync(env, ttl=timedelta(days=1))
    third = feat_sync(env, ttl=timedelta(days=1))
    assert versions(env) == [
        (1, 10, old, old + timedelta(days=1), False),
        (2, 20, fresh, None, True),
    ]
    assert (second["rows_inserted"], third["rows_inserted"]) == (0, 0)
    env.src("UPDATE f SET score = 11, event_ts = now() WHERE user_id = 1")
    assert feat_sync(env, ttl=timedelta(days=1))["rows_inserted"] == 1
    assert versions(env)[1][1:] == (11, versions(env)[1][2], None, True)


def test_warning_once_per_run(env: Any) -> None:
    from typing import Annotated

    from ematix_flow import ematix, natural_key, pk
    from ematix_flow.types import String

    @ematix.table(schema="wh")
    class Person:
        id: Annotated[BigInt, pk()]
        email: Annotated[String[64], natural_key()]

    env.wh("CREATE TABLE p (id bigint, email text)", "INSERT INTO p VALUES (1, 'a')")

    @pipeline.register(name="warn_twice")
    def warn_twice() -> None:
        for _ in range(2):
            pipeline.sync(
                target=Person,
                source=Source.postgres_query(env.warehouse, "SELECT * FROM p"),
                target_connection=env.warehouse,
                mode="merge",
            )

    try:
        with pytest.warns(UserWarning) as caught:
            report = pipeline.run("warn_twice")
    finally:
        pipeline._unregister("warn_twice")
    assert report.ok
    texts = [str(w.message) for w in caught if "merge key resolved" in str(w.message)]
    assert texts == [
        "Pipeline warn_twice: merge key resolved to (email) from natural_key(), which "
        "differs from declared primary key (id). Pass keys= explicitly to silence this "
        "warning."
    ]
