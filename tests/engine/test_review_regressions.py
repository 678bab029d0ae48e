"""Keys, constraints, paths and errors at their edges: one test per behaviour, both
paths where a path applies.

What is proved:

1. ``mode="append"`` into a class whose unique key column may be NULL is refused at plan
   time with a ``DefinitionError`` naming the column; nothing is created.
2. Append without keys, incremental on a ``date`` column: a row identical to one
   already loaded at the watermark's value is loaded as many times as the source holds
   it beyond the target's copies (``/home`` twice and ``/about`` once after the second
   run), and a run with nothing new inserts nothing.
3. Connections given as ``service=…`` (a ``pg_service.conf`` named by
   ``PGSERVICEFILE``) are never judged the same database: the run takes the cross-DB
   path and the rows come from the source database, not from a same-named table in
   the warehouse.
4. Unique constraints are checked before the run ends: a dry run of a batch that would
   give two target rows one primary key (the natural key wins the key choice) fails
   like the real run, naming the primary-key constraint and saying the keys are not
   the primary key; a batch violating a deferred unique constraint fails in a dry run
   too. The primary key the engine creates is never deferrable (a later run may merge
   on it, a foreign key may reference it); a unique constraint other than the merge
   key is deferrable.
5. A lock-timeout error shows the blocking session's statement without its literals: a
   password in that statement appears neither in the error nor in
   ``ematix_flow.run_history``, while the pid and the table are named.
6. A same-DB run whose target row is updated by another session after the run's
   snapshot was taken is retried and succeeds. The interleaving is forced: the source
   query waits on an advisory lock the test holds until the other update committed.
7. Key columns named ``n`` or ``total`` work in merge and append-with-key, and a
   duplicated key among them is reported as duplicated.
8. ``incremental_lookback=0.5`` on a ``bigint`` incremental column is refused with a
   ``DefinitionError`` before anything runs; a whole number is accepted.
9. Tables built by an earlier version keep working: an append table whose primary key
   is ``(id)`` without ``_batch_id`` loads a second run (with a warning that it was
   built before batches carried their keys); scd1/scd2 tables owned by another role are
   synced by a role with DML rights only (and the state schema), including the row-hash
   recomputation of a table whose hash version was never recorded.
10. Errors name the real cause: a same-DB source ``WHERE 1/(id-2) >= 0`` fails as "the
    source query failed: division by zero", and a key overflowing ``integer`` names
    column ``'id'``, on both paths.
"""

from __future__ import annotations

import importlib
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ematix_flow import ematix, natural_key, pipeline, pk
from ematix_flow._core import connect
from ematix_flow._engine.execute import execute
from ematix_flow._engine.options import TargetOptions
from ematix_flow._engine.plan import plan
from ematix_flow._errors import DefinitionError, EmatixFlowError, SourceError
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable, table_spec
from ematix_flow.types import BigInt, Column, Date, Integer, Text, TimestampTZ

pytestmark = [
    pytest.mark.db,
    pytest.mark.filterwarnings("ignore:Pipeline .*:UserWarning"),
]

PATHS = ["same_db", "cross_db"]
#: The module (``ematix_flow._engine.execute`` the name is its function ``execute``).
execute_module = importlib.import_module("ematix_flow._engine.execute")


def src_conn(env: Any, path: str) -> Any:
    return env.warehouse if path == "same_db" else env.source


def on_source(env: Any, path: str, *statements: str) -> None:
    """Run statements where the source is read from: the warehouse itself for same-DB."""
    (env.wh if path == "same_db" else env.src)(*statements)


def exists(env: Any, table: Any) -> bool:
    name = table_spec(table).qualified_name
    return env.rows("SELECT to_regclass(%s) IS NOT NULL", params=(name,))[0][0]


def can_create_roles(server_url: str) -> bool:
    with psycopg.connect(server_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()[0]


class Dim(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "t"

    id = Column(BigInt(), nullable=False, primary_key=True)
    name = Column(Text())


# --- 1. append into a nullable unique key ------------------------------------------------


class Signup(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "signup"
    __unique_constraints__ = (("email",),)

    email = Column(Text())  # may be NULL
    ts = Column(TimestampTZ(), nullable=False)


@pytest.mark.parametrize("path", PATHS)
def test_append_into_a_nullable_unique_key_is_refused(env: Any, path: str) -> None:
    on_source(
        env,
        path,
        "CREATE SCHEMA app",
        "CREATE TABLE app.s (email text, ts timestamptz)",
        "INSERT INTO app.s VALUES ('a@x', '2024-05-01 09:00+00'), (NULL, '2024-05-01 10:00+00')",
    )
    with pytest.raises(DefinitionError) as err:
        pipeline.sync(
            target=Signup,
            source=Source.postgres_query(src_conn(env, path), "SELECT email, ts FROM app.s"),
            target_connection=env.warehouse,
            mode="append",
            incremental_column="ts",
            force_path=path,
        )
    message = str(err.value)
    assert "'email'" in message and "NULL" in message, message
    assert not exists(env, Signup)


# --- 2. keyless append: identical rows at the watermark ----------------------------------


class PageViews(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "page_views"

    day = Column(Date(), nullable=False)
    page = Column(Text(), nullable=False)


@pytest.mark.parametrize("path", PATHS)
def test_keyless_append_loads_identical_rows_at_the_watermark(env: Any, path: str) -> None:
    on_source(
        env,
        path,
        "CREATE SCHEMA app",
        "CREATE TABLE app.pv (day date, page text)",
        "INSERT INTO app.pv VALUES ('2024-05-01', '/home')",
    )
    kw: dict[str, Any] = dict(
        target=PageViews,
        source=Source.postgres_query(src_conn(env, path), "SELECT day, page FROM app.pv"),
        target_connection=env.warehouse,
        mode="append",
        incremental_column="day",
        force_path=path,
    )
    counts = "SELECT page, count(*) FROM wh.page_views GROUP BY page ORDER BY page"

    first = pipeline.sync(**kw)
    assert first["rows_inserted"] == 1, first
    assert env.rows(counts) == [("/home", 1)]

    # a second view of /home on the watermark's day, and one of another page
    on_source(
        env, path, "INSERT INTO app.pv VALUES ('2024-05-01', '/home'), ('2024-05-01', '/about')"
    )
    second = pipeline.sync(**kw)
    assert second["rows_inserted"] == 2, second
    assert env.rows(counts) == [("/about", 1), ("/home", 2)]

    third = pipeline.sync(**kw)
    assert third["status"] == "succeeded" and third["rows_inserted"] == 0, third
    assert env.rows(counts) == [("/about", 1), ("/home", 2)]


# --- 3. service= connections are never the same database ---------------------------------


def test_service_connections_take_the_cross_db_path(
    env: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def block(name: str, url: str) -> str:
        params = conninfo_to_dict(url)
        return f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in params.items())

    service_file = tmp_path / "pg_service.conf"
    service_file.write_text(block("crm", env.dbs.source_url) + block("dwh", env.dbs.warehouse_url))
    monkeypatch.setenv("PGSERVICEFILE", str(service_file))
    env.src(
        "CREATE SCHEMA app",
        "CREATE TABLE app.s (id bigint, name text)",
        "INSERT INTO app.s VALUES (1, 'from source'), (2, 'from source')",
    )
    # the warehouse holds a stale table under the same name
    env.wh(
        "CREATE SCHEMA app",
        "CREATE TABLE app.s (id bigint, name text)",
        "INSERT INTO app.s VALUES (99, 'stale warehouse copy')",
    )
    result = pipeline.sync(
        target=Dim,
        source=Source.postgres_query(connect("service=crm"), "SELECT id, name FROM app.s"),
        target_connection=connect("service=dwh"),
        mode="merge",
    )
    assert result["path"] == "cross_db", result
    assert result["rows_inserted"] == 2, result
    assert env.table("wh", "t", "id") == [(1, "from source"), (2, "from source")]


# --- 4. unique constraints checked within the run ----------------------------------------


@ematix.table(schema="wh")
class Acct:
    id: Annotated[BigInt, pk()]
    email: Annotated[Text, natural_key()]
    name: Text | None


@ematix.table(schema="wh")
class AcctById:
    """The same shape, merged by its primary key: the e-mail constraint is the other one."""

    id: Annotated[BigInt, pk()]
    email: Annotated[Text, natural_key()]
    name: Text | None


def deferrable(env: Any, table: str) -> dict[str, bool]:
    return dict(
        env.rows(
            "SELECT conname, condeferrable FROM pg_constraint "
            "WHERE conrelid = to_regclass(%s) AND contype IN ('p', 'u')",
            params=(table,),
        )
    )


@pytest.mark.parametrize("path", PATHS)
def test_dry_run_fails_on_a_primary_key_violation_like_the_run(env: Any, path: str) -> None:
    on_source(
        env,
        path,
        "CREATE SCHEMA app",
        "CREATE TABLE app.s (id bigint, email text, name text)",
        # one id, two e-mails: merged by e-mail, both rows would get id 1
        "INSERT INTO app.s VALUES (1, 'a@x', 'Ann'), (1, 'b@x', 'Ben')",
    )
    src = Source.postgres_query(src_conn(env, path), "SELECT id, email, name FROM app.s")
    opts = TargetOptions(table=table_spec(Acct), mode="merge", force_path=path)

    dry_plan = plan(opts, src, env.warehouse, pipeline="p")
    assert dry_plan.keys == ("email",), dry_plan.keys
    dry = execute(dry_plan, dry_run=True)
    run = execute(plan(opts, src, env.warehouse, pipeline="p"))

    for what, result in (("dry run", dry), ("run", run)):
        assert result.status == "failed", (what, result.status, result.error)
        error = result.error or ""
        assert "acct_pkey" in error, (what, error)
        assert "not the primary key" in error, (what, error)
    assert not exists(env, Acct)  # the failed run's transaction created nothing


@pytest.mark.parametrize("path", PATHS)
def test_dry_run_fails_on_a_deferred_unique_violation(env: Any, path: str) -> None:
    on_source(
        env,
        path,
        "CREATE SCHEMA app",
        "CREATE TABLE app.s (id bigint, email text, name text)",
        "INSERT INTO app.s VALUES (1, 'a@x', 'Ann')",
    )
    src = Source.postgres_query(src_conn(env, path), "SELECT id, email, name FROM app.s")
    opts = TargetOptions(table=table_spec(AcctById), mode="merge", keys=("id",), force_path=path)
    assert execute(plan(opts, src, env.warehouse, pipeline="p")).status == "succeeded"
    assert deferrable(env, "wh.acct_by_id")["acct_by_id_email_key"] is True

    # a second id with the same e-mail: the deferred constraint is violated
    on_source(env, path, "INSERT INTO app.s VALUES (2, 'a@x', 'Ann again')")
    dry = execute(plan(opts, src, env.warehouse, pipeline="p"), dry_run=True)
    run = execute(plan(opts, src, env.warehouse, pipeline="p"))
    for what, result in (("dry run", dry), ("run", run)):
        assert result.status == "failed", (what, result.status, result.error)
        assert "acct_by_id_email_key" in (result.error or ""), (what, result.error)
    assert env.table("wh", "acct_by_id", "id", "id, email") == [(1, "a@x")]


def test_engine_primary_key_is_not_deferrable(env: Any) -> None:
    env.wh(
        "CREATE SCHEMA app",
        "CREATE TABLE app.s (id bigint, email text, name text)",
        "INSERT INTO app.s VALUES (1, 'a@x', 'Ann')",
    )
    src = Source.postgres_query(env.warehouse, "SELECT id, email, name FROM app.s")

    # merged by the natural key (e-mail): the primary key is not deferrable
    first = pipeline.sync(target=Acct, source=src, target_connection=env.warehouse, mode="merge")
    assert first["status"] == "succeeded", first
    assert deferrable(env, "wh.acct") == {"acct_pkey": False, "acct_email_key": False}

    # a later run may merge on the primary key (ON CONFLICT needs it immediate)
    env.wh("UPDATE app.s SET name = 'Ann B.'")
    second = pipeline.sync(
        target=Acct, source=src, target_connection=env.warehouse, mode="merge", keys=("id",)
    )
    assert second["status"] == "succeeded" and second["rows_updated"] == 1, second
    assert env.table("wh", "acct", "id", "id, name") == [(1, "Ann B.")]

    # a foreign key may reference it
    env.wh("CREATE TABLE wh.orders (id bigint PRIMARY KEY, acct_id bigint REFERENCES wh.acct (id))")
    env.wh("INSERT INTO wh.orders VALUES (10, 1)")

    # merged by the primary key: the other unique constraint is the deferrable one
    by_id = pipeline.sync(
        target=AcctById, source=src, target_connection=env.warehouse, mode="merge", keys=("id",)
    )
    assert by_id["status"] == "succeeded", by_id
    assert deferrable(env, "wh.acct_by_id") == {
        "acct_by_id_pkey": False,
        "acct_by_id_email_key": True,
    }


# --- 5. lock-timeout errors hide the blocker's literals ----------------------------------


def test_lock_timeout_error_hides_the_blockers_literals(env: Any) -> None:
    if not can_create_roles(env.dbs.server_url):
        pytest.skip("the test role lacks CREATEROLE: the blocker runs CREATE ROLE … PASSWORD")
    env.wh(
        "CREATE SCHEMA app",
        "CREATE TABLE app.s (id bigint, name text)",
        "INSERT INTO app.s VALUES (1, 'a')",
    )
    src = Source.postgres_query(env.warehouse, "SELECT id, name FROM app.s")
    pipeline.sync(target=Dim, source=src, target_connection=env.warehouse, mode="merge")

    role = f"r_{uuid.uuid4().hex[:10]}"
    blocker = psycopg.connect(env.dbs.warehouse_url)  # a migration, mid-transaction
    try:
        blocker.execute("LOCK TABLE wh.t IN ACCESS EXCLUSIVE MODE")
        blocker.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'Hunter2-s3cr3t'")  # rolled back
        pid = blocker.info.backend_pid
        shown = env.rows("SELECT query FROM pg_stat_activity WHERE pid = %s", params=(pid,))
        assert "Hunter2" in shown[0][0], shown  # what a naive report would copy

        with pytest.raises(EmatixFlowError) as err:
            pipeline.sync(
                target=Dim,
                source=src,
                target_connection=env.warehouse,
                mode="merge",
                lock_timeout=1,
            )
    finally:
        blocker.rollback()
        blocker.close()

    message = str(err.value)
    assert f"pid {pid}" in message, message
    assert "wh.t" in message, message
    assert "Hunter2" not in message, message
    history = env.rows("SELECT status, error FROM ematix_flow.run_history ORDER BY id")
    assert [s for s, _ in history] == ["succeeded", "failed"], history
    assert all("Hunter2" not in (e or "") for _, e in history), history


# --- 6. same-DB: a concurrent writer after the snapshot ----------------------------------


def test_same_db_run_is_retried_after_a_concurrent_target_update(
    env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.wh(
        "CREATE SCHEMA app",
        "CREATE TABLE app.s (id bigint, name text)",
        "INSERT INTO app.s VALUES (1, 'a')",
    )
    first = pipeline.sync(
        target=Dim,
        source=Source.postgres_query(env.warehouse, "SELECT id, name FROM app.s"),
        target_connection=env.warehouse,
        mode="merge",
        force_path="same_db",
    )
    assert first["rows_inserted"] == 1, first
    env.wh("UPDATE app.s SET name = 'from crm'")

    attempts: list[int] = []
    real_run: Callable[..., Any] = execute_module._run

    def counted(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(execute_module, "_run", counted)

    # The source query waits for an advisory lock the test holds: the run's snapshot is
    # taken (its transaction has begun) before the other session's update commits.
    gate = 770_000 + uuid.uuid4().int % 100_000
    gated = f"SELECT s.id, s.name FROM app.s AS s CROSS JOIN pg_advisory_xact_lock({gate}) AS g"
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = pipeline.sync(
                target=Dim,
                source=Source.postgres_query(env.warehouse, gated),
                target_connection=env.warehouse,
                mode="merge",
                force_path="same_db",
            )
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    holder = psycopg.connect(env.dbs.warehouse_url, autocommit=True)
    thread = threading.Thread(target=run, daemon=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (gate,))
        thread.start()
        deadline = time.monotonic() + 15
        while not env.rows(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid = 0 AND objid = %s AND objsubid = 1",
            params=(gate,),
        ):
            assert thread.is_alive(), outcome
            assert time.monotonic() < deadline, "the run never reached the source query"
            time.sleep(0.05)
        # another pipeline updates the target row the run is about to merge
        env.wh("UPDATE wh.t SET name = 'from billing' WHERE id = 1")
    finally:
        holder.execute("SELECT pg_advisory_unlock(%s)", (gate,))
        holder.close()
    thread.join(30)
    assert not thread.is_alive(), "the run did not finish"

    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result["status"] == "succeeded" and result["rows_updated"] == 1, result
    assert len(attempts) == 2, attempts  # cancelled once by the concurrent update
    assert env.table("wh", "t", "id") == [(1, "from crm")]


# --- 7. key columns named n / total ------------------------------------------------------


class SlotN(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "slot_n"

    day = Column(Date(), nullable=False, primary_key=True)
    n = Column(BigInt(), nullable=False, primary_key=True)
    label = Column(Text())


class SlotTotal(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "slot_total"

    day = Column(Date(), nullable=False, primary_key=True)
    total = Column(BigInt(), nullable=False, primary_key=True)
    label = Column(Text())


@pytest.mark.parametrize("mode", ["merge", "append"])
@pytest.mark.parametrize(("target", "key"), [(SlotN, "n"), (SlotTotal, "total")])
def test_key_columns_named_like_the_check_aggregates(
    env: Any, target: Any, key: str, mode: str
) -> None:
    env.wh(
        "CREATE SCHEMA app",
        f"CREATE TABLE app.s (day date, {key} bigint, label text)",
        "INSERT INTO app.s VALUES ('2024-01-01', 1, 'a'), ('2024-01-01', 2, 'b')",
    )
    src = Source.postgres_query(env.warehouse, f"SELECT day, {key}, label FROM app.s")
    name = table_spec(target).name
    for run in (1, 2):
        result = pipeline.sync(
            target=target, source=src, target_connection=env.warehouse, mode=mode
        )
        assert result["status"] == "succeeded", (run, result)
    loaded = env.rows(f"SELECT count(*) FROM wh.{name}")[0][0]
    assert loaded == (2 if mode == "merge" else 4), loaded

    # a key twice in the batch is reported as such, with its count
    env.wh("INSERT INTO app.s VALUES ('2024-01-01', 1, 'a again')")
    with pytest.raises(SourceError) as err:
        pipeline.sync(target=target, source=src, target_connection=env.warehouse, mode=mode)
    message = str(err.value)
    assert "1 duplicated key(s)" in message and "×2" in message, message
    assert key in message, message


# --- 8. fractional lookback on an integer column -----------------------------------------


def test_fractional_lookback_on_a_bigint_column_is_refused(env: Any) -> None:
    env.wh(
        "CREATE SCHEMA app",
        "CREATE TABLE app.s (id bigint, name text)",
        "INSERT INTO app.s VALUES (1, 'a')",
    )
    src = Source.postgres_query(env.warehouse, "SELECT id, name FROM app.s")
    with pytest.raises(DefinitionError) as err:
        TargetOptions(
            table=table_spec(Dim), mode="merge", incremental_column="id", incremental_lookback=0.5
        )
    assert "whole number" in str(err.value) and "'id'" in str(err.value), err.value
    with pytest.raises(DefinitionError):
        pipeline.sync(
            target=Dim,
            source=src,
            target_connection=env.warehouse,
            mode="merge",
            incremental_column="id",
            incremental_lookback=0.5,
        )
    assert not exists(env, Dim)

    for lookback in (1, Decimal("2")):
        for _ in range(2):  # the second run reads below the stored watermark
            result = pipeline.sync(
                target=Dim,
                source=src,
                target_connection=env.warehouse,
                mode="merge",
                incremental_column="id",
                incremental_lookback=lookback,
            )
            assert result["status"] == "succeeded", (lookback, result)
    assert env.table("wh", "t", "id") == [(1, "a")]


# --- 9. tables built by an earlier version -----------------------------------------------


class Events(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "ev"

    id = Column(BigInt(), nullable=False, primary_key=True)
    name = Column(Text())


def test_append_table_with_a_key_without_batch_id_keeps_working(env: Any) -> None:
    env.wh(
        "CREATE SCHEMA app",
        "CREATE TABLE app.s (id bigint, name text)",
        "INSERT INTO app.s VALUES (1, 'a'), (2, 'b')",
        "CREATE SCHEMA wh",
        # what an append with primary key (id) used to build
        "CREATE TABLE wh.ev (id bigint NOT NULL, name text, _loaded_at timestamptz NOT NULL, "
        "_batch_id uuid NOT NULL, PRIMARY KEY (id))",
    )
    kw: dict[str, Any] = dict(
        target=Events,
        source=Source.postgres_query(env.warehouse, "SELECT id, name FROM app.s"),
        target_connection=env.warehouse,
        mode="append",
        incremental_column="id",
    )
    with pytest.warns(UserWarning, match="built before batches carried their keys"):
        first = pipeline.sync(**kw)
    assert first["status"] == "succeeded" and first["rows_inserted"] == 2, first

    env.wh("INSERT INTO app.s VALUES (3, 'c')")
    with pytest.warns(UserWarning, match="built before batches carried their keys"):
        second = pipeline.sync(**kw)
    assert second["status"] == "succeeded" and second["rows_inserted"] == 1, second
    assert env.table("wh", "ev", "id", "id, name") == [(1, "a"), (2, "b"), (3, "c")]
    pkey = env.rows(
        "SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_constraint c "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) "
        "WHERE c.conrelid = 'wh.ev'::regclass AND c.contype = 'p'"
    )
    assert pkey == [(["id"],)], pkey


@pytest.mark.parametrize("mode", ["scd1", "scd2"])
def test_tables_owned_by_another_role_sync_with_dml_rights(
    env: Any, own_role: Callable[[str], Any], mode: str
) -> None:
    etl = own_role(f"etl-{uuid.uuid4().hex[:8]}")
    env.wh(
        "CREATE SCHEMA app",
        "CREATE TABLE app.s (id bigint, name text)",
        "INSERT INTO app.s VALUES (1, 'a'), (2, 'b')",
    )
    query = "SELECT id, name FROM app.s"

    def sync(url: str) -> dict[str, Any]:
        conn = connect(url)
        return pipeline.sync(
            target=Dim, source=Source.postgres_query(conn, query), target_connection=conn, mode=mode
        )

    # built by the owner (the test's own role)
    owner = sync(env.dbs.warehouse_url)
    assert owner["status"] == "succeeded" and owner["rows_inserted"] == 2, owner

    params = conninfo_to_dict(env.dbs.warehouse_url)
    params.update(user=etl.name, password=etl.password)
    etl_url = make_conninfo(**params)
    who = sql.Identifier(etl.name)
    state_tables = [
        r[0] for r in env.rows("SELECT tablename FROM pg_tables WHERE schemaname = 'ematix_flow'")
    ]
    with psycopg.connect(env.dbs.warehouse_url, autocommit=True) as c:
        c.execute(sql.SQL("ALTER ROLE {} NOCREATEDB").format(who))
        c.execute(sql.SQL("GRANT USAGE ON SCHEMA wh, app TO {}").format(who))
        c.execute(
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA wh, app TO {}"
            ).format(who)
        )
        c.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA wh TO {}").format(who))
        c.execute(sql.SQL("ALTER SCHEMA ematix_flow OWNER TO {}").format(who))
        for t in state_tables:
            c.execute(
                sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier("ematix_flow", t), who)
            )
    try:
        env.wh("INSERT INTO app.s VALUES (3, 'c')")
        run = sync(etl_url)
        assert run["status"] == "succeeded" and run["rows_inserted"] == 1, run

        # a table whose row-hash version was never recorded: the hashes are recomputed
        # (DML), and the version is recorded in the state schema, not on the table
        env.wh("DELETE FROM ematix_flow.target_tables", "UPDATE app.s SET name = 'b2' WHERE id = 2")
        again = sync(etl_url)
        assert again["status"] == "succeeded", again
        assert again["rows_updated"] == 1 and again["rows_inserted"] == 0, again
        assert env.rows("SELECT count(*) FROM ematix_flow.target_tables")[0][0] == 1

        unchanged = sync(etl_url)
        assert unchanged["status"] == "succeeded", unchanged
        assert unchanged["rows_inserted"] == unchanged["rows_updated"] == 0, unchanged
        current = "WHERE is_current" if mode == "scd2" else ""
        assert env.rows(f"SELECT id, name FROM wh.t {current} ORDER BY id") == [
            (1, "a"),
            (2, "b2"),
            (3, "c"),
        ]
        versions = 4 if mode == "scd2" else 3
        assert env.rows("SELECT count(*) FROM wh.t")[0][0] == versions
    finally:
        with psycopg.connect(env.dbs.warehouse_url, autocommit=True) as c:
            c.execute(sql.SQL("REASSIGN OWNED BY {} TO current_user").format(who))
            c.execute(sql.SQL("DROP OWNED BY {}").format(who))


# --- 10. errors name the real cause ------------------------------------------------------


class Narrow(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "narrow"

    name = Column(Text())
    id = Column(Integer(), nullable=False, primary_key=True)


def sync_narrow(env: Any, path: str, query: str) -> str:
    with pytest.raises(EmatixFlowError) as err:
        pipeline.sync(
            target=Narrow,
            source=Source.postgres_query(src_conn(env, path), query),
            target_connection=env.warehouse,
            mode="merge",
            force_path=path,
        )
    return str(err.value)


@pytest.fixture
def numbers(env: Any) -> Any:
    """``app.n`` in both databases: ids 1 and 10 000 000 000 (past ``integer``)."""
    for run in (env.src, env.wh):
        run(
            "CREATE SCHEMA app",
            "CREATE TABLE app.n (id bigint, name text)",
            "INSERT INTO app.n VALUES (1, 'a'), (2, 'b')",
            "CREATE TABLE app.big (id bigint, name text)",
            "INSERT INTO app.big VALUES (1, 'a'), (10000000000, 'b')",
        )
    return env


@pytest.mark.parametrize("path", PATHS)
def test_a_failing_source_query_is_named_as_such(numbers: Any, path: str) -> None:
    message = sync_narrow(numbers, path, "SELECT name, id FROM app.n WHERE 1/(id-2) >= 0")
    assert "the source query failed: division by zero" in message, message
    assert "does not fit" not in message, message


@pytest.mark.parametrize("path", PATHS)
def test_a_key_overflowing_its_column_names_the_key(numbers: Any, path: str) -> None:
    message = sync_narrow(numbers, path, "SELECT name, id FROM app.big")
    assert "column 'id'" in message, message
    assert "column 'name'" not in message, message
    assert "integer out of range" in message, message
