"""Target DDL: created with framework columns, additive drift applied in the run's
transaction, destructive drift refused with the report; source-only types cross by text."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ematix_flow import pipeline
from ematix_flow._errors import DriftError
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text, TimestampTZ

pytestmark = pytest.mark.db


class Cust(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "cust"
    id = Column(BigInt(), nullable=False, primary_key=True)
    name = Column(Text())
    note = Column(Text())


def sync(env: Any, mode: str = "scd1") -> dict:
    return pipeline.sync(
        target=Cust,
        source=Source.postgres_query(env.source, "SELECT id, name, note FROM s"),
        target_connection=env.warehouse,
        mode=mode,
    )


def test_additive_drift_is_applied_with_the_data(env: Any) -> None:
    env.src(
        "CREATE TABLE s (id bigint, name text, note text)", "INSERT INTO s VALUES (1, 'a', 'n')"
    )
    env.wh(
        "CREATE SCHEMA wh",
        "CREATE TABLE wh.cust (id bigint PRIMARY KEY, name text, row_hash text NOT NULL, "
        "_updated_at timestamptz NOT NULL)",
        "INSERT INTO wh.cust VALUES (1, 'old', 'h', now())",
    )
    result = sync(env)
    assert result["rows_updated"] == 1
    assert env.rows("SELECT id, name, note FROM wh.cust") == [(1, "a", "n")]
    history = env.rows("SELECT status FROM ematix_flow.run_history")
    assert history == [("succeeded",)]


def test_destructive_drift_is_refused_and_nothing_changes(env: Any) -> None:
    env.src(
        "CREATE TABLE s (id bigint, name text, note text)", "INSERT INTO s VALUES (1, 'a', 'n')"
    )
    env.wh(
        "CREATE SCHEMA wh",
        "CREATE TABLE wh.cust (id bigint PRIMARY KEY, name integer, note text)",
    )
    with pytest.raises(DriftError) as err:
        sync(env, "merge")
    text = str(err.value)
    assert "Pipeline (ad hoc), target wh.cust" in text and "name" in text
    assert env.rows("SELECT count(*) FROM wh.cust") == [(0,)]


def test_created_table_carries_framework_columns_and_current_index(env: Any) -> None:
    env.src(
        "CREATE TABLE s (id bigint, name text, note text)", "INSERT INTO s VALUES (1, 'a', 'n')"
    )
    sync(env, "scd2")
    cols = env.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'wh' "
        "AND table_name = 'cust' ORDER BY ordinal_position"
    )
    assert [c[0] for c in cols] == [
        "id", "name", "note", "valid_from", "valid_to", "is_current", "row_hash",
    ]  # fmt: skip
    idx = env.rows("SELECT indexdef FROM pg_indexes WHERE indexname = 'cust_current_key'")
    assert idx and "WHERE is_current" in idx[0][0]
    # (id, valid_from) is unique by construction; its index would cost every closed
    # version an entry, so a plain scd2 table carries the current-version index alone
    assert _indexes(env) == ["cust_current_key"]


def _indexes(env: Any) -> list[str]:
    return [
        r[0]
        for r in env.rows(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'wh' AND tablename = 'cust' "
            "ORDER BY indexname"
        )
    ]


def _pk(env: Any) -> list[tuple[str]]:
    return env.rows(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'wh.cust'::regclass AND contype = 'p'"
    )


def _source(env: Any) -> None:
    env.src(
        "CREATE TABLE s (id bigint, name text, note text)", "INSERT INTO s VALUES (1, 'a', 'n')"
    )


def _table(name: str = "cust", *, key: Any = Text, primary: bool = True, **extra: Any) -> type:
    """A ``wh.<name>`` table of ``id`` (``key`` type; the primary key unless not
    ``primary``), ``name``, ``note`` and the ``extra`` columns."""
    attrs: dict[str, Any] = {
        "__schema__": "wh",
        "__tablename__": name,
        "id": Column(key(), nullable=False, primary_key=primary),
        "name": Column(Text()),
        "note": Column(Text()),
        **{column: Column(kind()) for column, kind in extra.items()},
    }
    return type(f"Table_{name}", (ManagedTable,), attrs)


def _sync(
    env: Any,
    target: type = Cust,
    *,
    query: str = "SELECT id, name, note FROM s",
    same_db: bool = False,
    mode: str = "scd2",
    **options: Any,
) -> dict:
    return pipeline.sync(
        target=target,
        source=Source.postgres_query(env.warehouse if same_db else env.source, query),
        target_connection=env.warehouse,
        mode=mode,
        **options,
    )


def _scd2(env: Any, **options: Any) -> dict:
    return _sync(env, **options)


@pytest.mark.parametrize(
    "options",
    [{"handle_deletes": "soft"}, {"ttl": "30 days"}, {"event_timestamp_column": "ts"}],
    ids=["handle_deletes", "ttl", "event_time"],
)
def test_the_versions_key_is_built_where_the_latest_version_lookup_reads_it(
    env: Any, options: dict
) -> None:
    env.src(
        "CREATE TABLE s (id bigint, name text, note text, ts timestamptz)",
        "INSERT INTO s VALUES (1, 'a', 'n', now())",
    )
    if "ttl" in options:
        from datetime import timedelta

        options = {"ttl": timedelta(days=30)}
    if "event_timestamp_column" in options:
        with_ts = _table(key=BigInt, ts=TimestampTZ)
        _sync(env, with_ts, query="SELECT id, name, note, ts FROM s", **options)
    else:
        _scd2(env, **options)
    assert _pk(env) == [("PRIMARY KEY (id, valid_from)",)]


def test_a_table_without_the_versions_key_gets_its_index_when_the_lookup_starts(
    env: Any,
) -> None:
    _source(env)
    _scd2(env)
    assert _pk(env) == []
    env.src("UPDATE s SET name = 'b'", "INSERT INTO s VALUES (2, 'c', NULL)")
    assert _scd2(env, handle_deletes="hard")["rows_updated"] == 1
    assert _indexes(env) == ["cust_current_key", "cust_versions"]
    env.src("DELETE FROM s WHERE id = 1")
    assert _scd2(env, handle_deletes="hard")["rows_deleted"] == 1
    env.src("INSERT INTO s VALUES (1, 'back', NULL)")
    assert _scd2(env, handle_deletes="hard")["rows_inserted"] == 1
    versions = env.rows(
        "SELECT name, is_current, valid_to IS NULL FROM wh.cust WHERE id = 1 ORDER BY valid_from"
    )
    assert versions == [("a", False, False), ("b", False, False), ("back", True, True)]
    # the table keeps what it was built with: no drift, no key added later
    assert _pk(env) == []


def test_a_table_built_with_the_versions_key_keeps_it(env: Any) -> None:
    _source(env)
    _scd2(env, handle_deletes="soft")
    env.src("UPDATE s SET name = 'b'")
    assert _scd2(env)["rows_updated"] == 1  # no handle_deletes now: same table, no drift
    assert _pk(env) == [("PRIMARY KEY (id, valid_from)",)]


@pytest.fixture(scope="module")
def superuser_server(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server where the tests' role is a superuser (FOR ALL TABLES publications need
    one): the test server when its role is one, else the embedded PostgreSQL 18."""
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if row.fetchone()[0]:
            yield pg_server_url
            return
    from ematix_flow._embedded import start_embedded

    server = start_embedded(tmp_path_factory.mktemp("su"))
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def superuser_env(superuser_server: str, env: Any) -> Any:
    """An ``env`` like the test's own, on two fresh databases of
    :func:`superuser_server`."""
    from pg_helpers import drop_database
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    tag = uuid.uuid4().hex[:10]
    names = [f"su_{tag}_src", f"su_{tag}_wh"]
    urls = []
    with psycopg.connect(superuser_server, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            urls.append(make_conninfo(**{**conninfo_to_dict(superuser_server), "dbname": name}))
    yield type(env)(type(env.dbs)(superuser_server, *urls))
    for name in names:
        drop_database(superuser_server, name)


def test_a_published_schema_gets_the_versions_key_as_replica_identity(
    superuser_env: Any,
) -> None:
    """A publication replicating every table's updates refuses an UPDATE of a table
    without a replica identity: closing a version would fail on every re-sync."""
    env = superuser_env
    _source(env)
    env.wh("CREATE PUBLICATION everything FOR ALL TABLES")
    _scd2(env)
    assert _pk(env) == [("PRIMARY KEY (id, valid_from)",)]
    env.src("UPDATE s SET name = 'b'")
    assert _scd2(env)["rows_updated"] == 1
    assert env.rows("SELECT name FROM wh.cust WHERE is_current") == [("b",)]


def test_a_table_published_after_it_was_built_gets_the_versions_key(env: Any) -> None:
    """A publication added later (FOR ALL TABLES, or the table by name) would make every
    version close fail ("does not have a replica identity and publishes updates"): the
    next run builds the key first."""
    _source(env)
    _scd2(env)
    assert _pk(env) == []
    env.wh("CREATE PUBLICATION some_tables FOR TABLE wh.cust")
    env.src("UPDATE s SET name = 'b'")
    assert _scd2(env)["rows_updated"] == 1
    assert _pk(env) == [("PRIMARY KEY (id, valid_from)",)]
    env.src("UPDATE s SET name = 'c'")
    assert _scd2(env)["rows_updated"] == 1
    assert env.rows("SELECT name FROM wh.cust ORDER BY valid_from") == [("a",), ("b",), ("c",)]


def test_a_table_keyed_by_a_unique_constraint_keeps_it(env: Any) -> None:
    """A table matched by keys= and built with UNIQUE (keys, valid_from) (no primary key)
    keeps that constraint, which serves the lookup: no drift, no second index."""
    _source(env)
    by_keys = _table(key=BigInt, primary=False)  # no primary key: matched by keys=

    def run(**options: Any) -> dict:
        return _sync(env, by_keys, keys=("id",), **options)

    run(handle_deletes="hard")
    assert env.rows(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'wh.cust'::regclass AND contype = 'u'"
    ) == [("UNIQUE (id, valid_from)",)]
    env.src("UPDATE s SET name = 'b'")
    assert run()["rows_updated"] == 1
    env.src("DELETE FROM s")
    assert run(handle_deletes="hard")["rows_deleted"] == 1
    assert "cust_versions" not in _indexes(env)


@pytest.mark.parametrize("mode", ["merge", "scd1", "scd2"])
def test_source_and_target_of_different_collations_compare_in_the_target_s(
    env: Any, mode: str
) -> None:
    """Source text in one collation, the target's in another: PostgreSQL has no
    collation to compare them in unless the source's is dropped, as EXCLUDED's is."""
    env.wh(
        'CREATE TABLE public.s (id text COLLATE "POSIX", name text COLLATE "POSIX", note text)',
        "INSERT INTO public.s VALUES ('1', 'a', 'n'), ('2', 'b', NULL)",
        "CREATE SCHEMA wh",
    )
    extra = {
        "merge": "",
        "scd1": ", row_hash text NOT NULL, _updated_at timestamptz NOT NULL",
        "scd2": ", valid_from timestamptz NOT NULL, valid_to timestamptz, "
        "is_current boolean NOT NULL, row_hash text NOT NULL",
    }[mode]
    key = "UNIQUE (id)" if mode != "scd2" else "UNIQUE (id, valid_from)"
    env.wh(
        f'CREATE TABLE wh.txt (id text COLLATE "C" NOT NULL, name text COLLATE "C", '
        f"note text{extra}, {key})"
    )

    txt = _table("txt", primary=False)

    def run(**options: Any) -> dict:
        query = "SELECT id, name, note FROM public.s"
        return _sync(env, txt, query=query, same_db=True, mode=mode, keys=("id",), **options)

    assert run()["rows_inserted"] == 2
    env.wh("UPDATE public.s SET name = 'z' WHERE id = '1'")
    second = run(handle_deletes="hard")
    assert (second["rows_updated"], second["rows_deleted"]) == (1, 0)
    current = "WHERE is_current" if mode == "scd2" else ""
    assert env.rows(f"SELECT id, name FROM wh.txt {current} ORDER BY id") == [
        ("1", "z"),
        ("2", "b"),
    ]


def test_a_source_only_type_crosses_as_text(env: Any) -> None:
    env.src(
        "CREATE TYPE mood AS ENUM ('happy', 'sad')",
        "CREATE TABLE s (id bigint, name mood, note text)",
        "INSERT INTO s VALUES (1, 'happy', NULL), (2, 'sad', 'x')",
    )
    assert sync(env, "merge")["rows_inserted"] == 2
    assert env.rows("SELECT id, name, note FROM wh.cust ORDER BY id") == [
        (1, "happy", None),
        (2, "sad", "x"),
    ]
