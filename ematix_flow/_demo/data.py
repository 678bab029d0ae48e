"""The demo's databases and data: an OLTP source (users and purchase events) and an
empty warehouse, generated and later changed entirely in SQL.

Everything is deterministic (``setseed`` before the generated rows), so two demo runs
with the same ``rows`` show the same numbers. Timestamps are fixed, not ``now()``: the
story is "a month of purchases, then two more days".
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = [
    "OLTP_DATABASE",
    "WAREHOUSE_DATABASE",
    "DemoDatabases",
    "SourceChanges",
    "change_source",
    "generate_source",
    "reset_databases",
]

OLTP_DATABASE = "ematix_demo_oltp"
WAREHOUSE_DATABASE = "ematix_demo_warehouse"

# One user for every this many purchase events.
EVENTS_PER_USER = 8


@dataclass(frozen=True)
class DemoDatabases:
    """The URLs of the two demo databases (no password: the embedded server trusts
    local connections)."""

    oltp_url: str
    warehouse_url: str


@dataclass(frozen=True)
class SourceChanges:
    """What :func:`change_source` did to the source, row counts per kind of change."""

    users_updated: int
    users_deleted: int
    purchases_deleted: int
    purchases_added: int


def _database_url(server_url: str, database: str) -> str:
    parts = urlsplit(server_url)
    if parts.scheme in ("postgresql", "postgres"):
        return urlunsplit(parts._replace(path="/" + quote(database)))
    params = conninfo_to_dict(server_url)
    params["dbname"] = database
    return make_conninfo(**params)


def reset_databases(server_url: str) -> DemoDatabases:
    """Drop (if present) and create the two demo databases: running the demo twice
    starts from the same place."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in (OLTP_DATABASE, WAREHOUSE_DATABASE):
            ident = sql.Identifier(name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    return DemoDatabases(
        oltp_url=_database_url(server_url, OLTP_DATABASE),
        warehouse_url=_database_url(server_url, WAREHOUSE_DATABASE),
    )


_SCHEMA = """
CREATE SCHEMA app;
CREATE TABLE app.users (
    id            bigint PRIMARY KEY,
    email         text NOT NULL,
    full_name     text,
    country       text NOT NULL,
    is_subscriber boolean NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE SCHEMA events;
CREATE TABLE events.purchases (
    purchase_id bigint PRIMARY KEY,
    user_id     bigint NOT NULL,
    event_ts    timestamptz NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    is_sub      boolean NOT NULL,
    product     text NOT NULL
);
CREATE INDEX purchases_user ON events.purchases (user_id, event_ts);
"""

# Users signed up over the year before October 2026; about one in seventeen has no
# name, one in five subscribes.
_USERS = """
INSERT INTO app.users
SELECT i,
       'user' || i || '@example.com',
       CASE WHEN i %% 17 = 0 THEN NULL
            ELSE (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Frances','Ken'])
                     [1 + i %% 8]
                 || ' '
                 || (ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth',
                           'Allen','Thompson'])[1 + (i / 8) %% 8]
       END,
       (ARRAY['DE','FR','GB','US','NL','SE','ES','IT','PL','JP'])[1 + (i * 7) %% 10],
       i %% 5 = 0,
       timestamptz '2025-10-01 00:00+00' + (i * 365 / %(users)s) * interval '1 day'
           + (i %% 1440) * interval '1 minute',
       timestamptz '2026-10-01 00:00+00'
FROM generate_series(1, %(users)s) AS i
"""

# ``rows`` purchases spread over ``days`` days from ``start``, numbered on from the
# largest purchase id there is; a few users buy a lot, most buy a little (power-law
# pick of the user). First a month of them (October 2026), later two more days.
_PURCHASES = """
INSERT INTO events.purchases
SELECT coalesce(max_id.m, 0) + g.i, g.user_id, g.event_ts, g.amount, u.is_subscriber,
       g.product
FROM (
    SELECT i,
           1 + floor(power(random(), 2) * %(users)s)::bigint AS user_id,
           %(start)s::timestamptz + random() * %(days)s * interval '1 day' AS event_ts,
           round((5 + random() * 195)::numeric, 2) AS amount,
           (ARRAY['book','course','ticket','subscription','gift card','hardware'])
               [1 + floor(random() * 6)::int] AS product
    FROM generate_series(1, %(rows)s) AS i
) AS g
JOIN app.users AS u ON u.id = g.user_id
CROSS JOIN (SELECT max(purchase_id) AS m FROM events.purchases) AS max_id
"""


def generate_source(oltp_url: str, *, rows: int) -> tuple[int, int]:
    """Create the source tables and fill them: ``rows`` purchase events and one user
    for every eight of them. Returns (users, purchases)."""
    users = max(50, rows // EVENTS_PER_USER)
    with psycopg.connect(oltp_url) as conn:
        conn.execute(_SCHEMA)
        conn.execute("SELECT setseed(0.42)")
        conn.execute(_USERS, {"users": users})
        conn.execute(
            _PURCHASES,
            {"users": users, "rows": rows, "start": "2026-10-01 00:00+00", "days": 30},
        )
        conn.execute("ANALYZE")
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM app.users), (SELECT count(*) FROM events.purchases)"
        ).fetchone()
    assert counts is not None
    return int(counts[0]), int(counts[1])


# Two days later: profiles change (new e-mail, moved country, subscription toggled),
# some accounts are closed (their purchases go with them), and new purchases arrive —
# some the same day as a user's latest one (a new version of an existing daily feature
# row), most on the two new days.
_UPDATE_USERS = """
UPDATE app.users
SET email = CASE WHEN id % 3 = 0 THEN 'user' || id || '@newmail.example' ELSE email END,
    country = CASE WHEN id % 3 = 1 THEN 'PT' ELSE country END,
    is_subscriber = CASE WHEN id % 3 = 2 THEN NOT is_subscriber ELSE is_subscriber END,
    updated_at = timestamptz '2026-11-01 09:00+00'
WHERE id % 25 = 7
"""
_DELETE_PURCHASES = "DELETE FROM events.purchases WHERE user_id % 97 = 13"
_DELETE_USERS = "DELETE FROM app.users WHERE id % 97 = 13"
_SAME_DAY_PURCHASES = """
INSERT INTO events.purchases
SELECT max_id.m + row_number() OVER (ORDER BY last.user_id),
       last.user_id,
       last.event_ts + (1 + last.user_id % 20) * interval '1 minute',
       round((5 + random() * 95)::numeric, 2),
       u.is_subscriber,
       'gift card'
FROM (SELECT user_id, max(event_ts) AS event_ts
      FROM events.purchases
      WHERE user_id % 10 = 1
      GROUP BY user_id) AS last
JOIN app.users AS u ON u.id = last.user_id
CROSS JOIN (SELECT max(purchase_id) AS m FROM events.purchases) AS max_id
"""


def change_source(oltp_url: str) -> SourceChanges:
    """Apply the demo's second-day changes to the source (updates, deletes, new
    events) in one transaction; returns how many rows each change touched."""
    with psycopg.connect(oltp_url) as conn:
        users, purchases = conn.execute(
            "SELECT (SELECT max(id) FROM app.users), (SELECT count(*) FROM events.purchases)"
        ).fetchone() or (0, 0)
        conn.execute("SELECT setseed(0.17)")
        updated = conn.execute(_UPDATE_USERS).rowcount
        deleted_purchases = conn.execute(_DELETE_PURCHASES).rowcount
        deleted_users = conn.execute(_DELETE_USERS).rowcount
        added = conn.execute(_SAME_DAY_PURCHASES).rowcount
        added += conn.execute(
            _PURCHASES,
            {
                "users": users,
                "rows": max(10, purchases // 15),
                "start": "2026-10-31 00:00+00",
                "days": 2,
            },
        ).rowcount
        conn.execute("ANALYZE")
    return SourceChanges(
        users_updated=updated,
        users_deleted=deleted_users,
        purchases_deleted=deleted_purchases,
        purchases_added=added,
    )
