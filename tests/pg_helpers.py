"""Helpers for tests that make and drop databases on the test server, whatever its role
may do (a role that is not a superuser included). Imported as ``pg_helpers`` (the tests
folder is on ``sys.path``), so that fixtures of any folder share it.
"""

from __future__ import annotations

import time

import psycopg
from psycopg import sql

__all__ = ["drop_database"]


def drop_database(server_url: str, name: str, *, attempts: int = 5) -> None:
    """Drop ``name``, whatever is still connected to it, as a role that need not be a
    superuser.

    ``DROP DATABASE … WITH (FORCE)`` terminates every other session on the database,
    and a role that is not a superuser may terminate only its own roles' sessions: an
    autovacuum worker busy on the database makes it fail. So this role's own sessions
    are ended first and a plain ``DROP DATABASE`` follows, which asks autovacuum to
    leave and waits for it; FORCE is the fallback for sessions of other roles.
    """
    ident = sql.Identifier(name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        for attempt in range(attempts):
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                "AND usename = current_user AND pid <> pg_backend_pid()",
                (name,),
            )
            try:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))
                return
            except psycopg.errors.ObjectInUse:
                try:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
                    return
                except psycopg.errors.InsufficientPrivilege:
                    if attempt == attempts - 1:
                        raise
                    time.sleep(0.5)
