"""The Connection object: redaction everywhere it is shown, identity for the same-DB
decision, and opening it against the real test server."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import psycopg
import pytest

from ematix_flow import _core, config, connect
from ematix_flow._errors import ConnectionFailedError

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Databases, Role

PASSWORD = "S3cr3t-Pw-9f4e"


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        (
            f"postgresql://app:{PASSWORD}@db:5432/wh",
            "postgresql://app:***@db:5432/wh",
        ),
        (
            f"postgres://app:{PASSWORD}@db/wh?sslmode=require",
            "postgres://app:***@db/wh?sslmode=require",
        ),
        (
            f"postgresql://app@db/wh?sslmode=require&password={PASSWORD}",
            "postgresql://app@db/wh?sslmode=require&password=***",
        ),
        (f"host=db password={PASSWORD} dbname=wh", "host=db password=*** dbname=wh"),
        ("host=db password='S3cr3t Pw 9f4e' dbname=wh", "host=db password=*** dbname=wh"),
        (
            f"host=db sslpassword={PASSWORD} password = {PASSWORD}",
            "host=db sslpassword=*** password = ***",
        ),
        (
            f"postgresql://db/wh?sslpassword={PASSWORD}&user=app",
            "postgresql://db/wh?sslpassword=***&user=app",
        ),
        ("postgresql://app@db/wh", "postgresql://app@db/wh"),
        ("postgresql://app:@/wh?host=/tmp/x", "postgresql://app:@/wh?host=/tmp/x"),
    ],
)
def test_redacted_replaces_every_form_of_password(dsn: str, redacted: str) -> None:
    conn = _core.connect(dsn)
    assert conn.redacted == redacted
    for shown in (str(conn), repr(conn), conn.describe(), conn.target):
        assert "S3cr3t" not in shown


def test_percent_encoded_password_is_redacted() -> None:
    conn = _core.connect("postgresql://app:S3cr3t%40Pw@db/wh")
    assert conn.redacted == "postgresql://app:***@db/wh"


def test_redact_dsn_scrubs_a_known_password_anywhere_in_a_message() -> None:
    message = f'FATAL: password authentication failed for "{PASSWORD}" (S3cr3t-Pw-9f4e)'
    assert PASSWORD not in config.redact_dsn(message, PASSWORD)
    assert config.redact_dsn(message, PASSWORD).count("***") == 2


def test_repr_and_str_never_show_the_dsn() -> None:
    conn = _core.connect(f"postgresql://app:{PASSWORD}@db:5433/wh")
    assert repr(conn) == (
        "Connection(name=None, origin='explicit url', dsn='postgresql://app:***@db:5433/wh')"
    )
    assert str(conn) == "postgresql://app:***@db:5433/wh"
    assert PASSWORD not in f"{conn!r} {conn!s} {[conn]}"


def test_connection_is_frozen_and_carries_its_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", f"postgresql://app:{PASSWORD}@db:5433/wh")
    conn = connect("warehouse")
    assert (conn.name, conn.host, conn.port, conn.dbname, conn.user) == (
        "warehouse",
        "db",
        5433,
        "wh",
        "app",
    )
    assert conn.origin == "env EMATIX_FLOW_DSN_WAREHOUSE"
    assert conn.describe() == "warehouse → app@db:5433/wh"
    with pytest.raises(dataclasses.FrozenInstanceError):
        conn.dsn = "x"  # type: ignore[misc]


def test_core_connect_is_the_explicit_url_escape_hatch() -> None:
    conn = _core.connect("postgresql://app@db/wh")
    assert (conn.name, conn.origin) == (None, "explicit url")
    assert conn.describe() == "explicit url → app@db/wh"


def test_same_database_as_compares_host_port_and_database() -> None:
    a = _core.connect("postgresql://alice:pw1@db:5432/wh")
    assert a.same_database_as(_core.connect("host=db port=5432 dbname=wh user=bob"))
    assert a.same_database_as(_core.connect("postgresql://carol@db/wh"))  # default port
    assert not a.same_database_as(_core.connect("postgresql://alice:pw1@db:5432/other"))
    assert not a.same_database_as(_core.connect("postgresql://alice:pw1@db2:5432/wh"))
    assert not a.same_database_as(_core.connect("postgresql://alice:pw1@db:6543/wh"))


def test_same_database_as_treats_a_socket_directory_as_the_host() -> None:
    a = _core.connect("postgresql://postgres:@/wh?host=/tmp/sock1")
    assert a.same_database_as(_core.connect("host=/tmp/sock1 dbname=wh user=other"))
    assert not a.same_database_as(_core.connect("host=/tmp/sock2 dbname=wh user=postgres"))


@pytest.mark.db
def test_open_returns_a_working_psycopg_connection(dbs: Databases) -> None:
    conn = connect(url=dbs.warehouse_url)
    with conn.open(autocommit=True) as pg:
        assert isinstance(pg, psycopg.Connection)
        assert pg.execute("SELECT current_database()").fetchone() == (conn.dbname,)
    assert conn.same_database_as(_core.connect(dbs.warehouse_url))
    assert not conn.same_database_as(_core.connect(dbs.source_url))


def test_open_failure_names_the_connection_and_scrubs_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", f"postgresql://app:{PASSWORD}@127.0.0.1:1/wh")
    conn = connect("warehouse")
    with pytest.raises(ConnectionFailedError) as info:
        conn.open(connect_timeout=2)
    message = str(info.value)
    assert "'warehouse'" in message
    assert "postgresql://app:***@127.0.0.1:1/wh" in message
    assert "env EMATIX_FLOW_DSN_WAREHOUSE" in message
    assert "Connection refused" in message  # the driver's reason is kept
    assert PASSWORD not in message
    assert isinstance(info.value.__cause__, psycopg.OperationalError)


@pytest.mark.db
def test_open_failure_for_a_missing_database(own_role: Callable[[str], Role]) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    # a role whose password is the marker: the server accepts the login, then finds no
    # such database, and the message it sends back must not carry the password
    params = conninfo_to_dict(own_role(PASSWORD).url)
    params.update(dbname="no_such_db_here")
    conn = _core.connect(make_conninfo(**params))
    with pytest.raises(ConnectionFailedError) as info:
        conn.open(connect_timeout=5)
    message = str(info.value)
    assert 'database "no_such_db_here" does not exist' in message
    assert PASSWORD not in message
    assert "password=***" in message


def test_connect_is_exported_from_the_package() -> None:
    import ematix_flow

    assert ematix_flow.connect is config.connect
    assert "connect" in ematix_flow.__all__
