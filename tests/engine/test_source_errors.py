"""Source problems become errors naming pipeline, target and column — never a bare
driver traceback — and a failed run leaves the target untouched with a 'failed' row."""

from __future__ import annotations

from typing import Any

import pytest

from ematix_flow import pipeline
from ematix_flow._errors import SourceError, SyncError
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, String, Text

pytestmark = pytest.mark.db


class Cust(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "cust"
    id = Column(BigInt(), nullable=False, primary_key=True)
    email = Column(String(8), nullable=False)
    name = Column(Text())


def sync(env: Any, query: str, path: str, **kw: Any) -> dict[str, Any]:
    conn = env.source if path == "cross_db" else env.warehouse
    return pipeline.sync(
        target=Cust,
        source=Source.postgres_query(conn, query),
        target_connection=env.warehouse,
        mode=kw.pop("mode", "merge"),
        force_path=path,
        **kw,
    )


def setup_source(env: Any, path: str, *rows: str) -> None:
    run = env.src if path == "cross_db" else env.wh
    run("CREATE TABLE s (id text, email text, name text)")
    for r in rows:
        run(f"INSERT INTO s VALUES {r}")


PATHS = ["same_db", "cross_db"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", ["merge", "scd1", "scd2"])
def test_duplicate_keys_in_one_batch(env: Any, path: str, mode: str) -> None:
    setup_source(
        env, path, "('1','a','x'), ('1','b','y'), ('2','c',NULL), ('2','d',NULL), ('3','e','z')"
    )
    with pytest.raises(SourceError) as err:
        sync(env, "SELECT * FROM s", path, mode=mode)
    text = str(err.value)
    assert "Pipeline (ad hoc), target wh.cust, key column(s) (id)" in text
    assert "2 duplicated key(s)" in text and "(1) ×2" in text and "(2) ×2" in text
    # the whole target transaction rolled back: not even the table was created
    assert env.rows("SELECT to_regclass('wh.cust') IS NULL") == [(True,)]
    rows = env.rows("SELECT status, error FROM ematix_flow.run_history")
    assert [r[0] for r in rows] == ["failed"] and "duplicated key" in rows[0][1]


@pytest.mark.parametrize("path", PATHS)
def test_target_column_missing_from_source_query(env: Any, path: str) -> None:
    setup_source(env, path, "('1','a','x')")
    with pytest.raises(SourceError) as err:
        sync(env, "SELECT id, name FROM s", path)
    assert "Pipeline (ad hoc), target wh.cust, column 'email'" in str(err.value)
    assert "returns no column named 'email'" in str(err.value)


def test_target_column_missing_from_source_table(env: Any) -> None:
    env.src("CREATE SCHEMA app", "CREATE TABLE app.users (uid bigint, mail text, name text)")
    with pytest.raises(SourceError) as err:
        pipeline.sync(
            target=Cust,
            source=Source.postgres_table(env.source, "app.users", column_map={"id": "uid"}),
            target_connection=env.warehouse,
            mode="merge",
        )
    text = str(err.value)
    assert "target wh.cust, column 'email'" in text
    assert "source table app.users has no column for target column(s) 'email'" in text


@pytest.mark.parametrize("path", PATHS)
def test_uncastable_value_names_the_column(env: Any, path: str) -> None:
    setup_source(env, path, "('1','a','x'), ('two','b','y')")
    with pytest.raises(SourceError) as err:
        sync(env, "SELECT * FROM s", path)
    text = str(err.value)
    assert "target wh.cust, column 'id'" in text and "invalid input syntax" in text


@pytest.mark.parametrize("path", PATHS)
def test_value_too_long_names_the_column(env: Any, path: str) -> None:
    setup_source(env, path, "('1','much too long for eight','x')")
    with pytest.raises(SourceError) as err:
        sync(env, "SELECT * FROM s", path)
    assert "column 'email'" in str(err.value)


@pytest.mark.parametrize("path", PATHS)
def test_null_in_not_null_column(env: Any, path: str) -> None:
    setup_source(env, path, "('1',NULL,'x')")
    with pytest.raises(SourceError, match="column 'email': the source holds NULL"):
        sync(env, "SELECT * FROM s", path)


def test_existing_table_without_unique_constraint_for_keys(env: Any) -> None:
    env.wh(
        "CREATE SCHEMA wh",
        "CREATE TABLE wh.cust (id bigint PRIMARY KEY, email varchar(8) NOT NULL, name text)",
    )
    setup_source(env, "same_db", "('1','a','x')")
    with pytest.raises(SyncError) as err:
        sync(env, "SELECT * FROM s", "same_db", keys=("email",))
    text = str(err.value)
    assert "no unique constraint or unique index on (email)" in text
    assert "ALTER TABLE wh.cust ADD UNIQUE (email)" in text and "[from explicit keys=]" in text
    env.wh("CREATE UNIQUE INDEX ON wh.cust (email)")
    assert sync(env, "SELECT * FROM s", "same_db", keys=("email",))["rows_inserted"] == 1


def test_broken_source_query(env: Any) -> None:
    with pytest.raises(SourceError, match='relation "nowhere" does not exist'):
        sync(env, "SELECT * FROM nowhere", "cross_db")
