"""The ``scd2`` statements: count the source, close changed (and deleted) current
versions, insert new ones; optionally expire versions older than ``ttl`` first.

Versions are half-open intervals ``[valid_from, valid_to)``; the current version has
``valid_to IS NULL`` and ``is_current``. Rules (the property tests rely on them):

- A key whose ``row_hash`` (of the compare columns) differs from its current version's
  gets that version closed at ``v = GREATEST(source valid_from, old valid_from + 1 µs)``
  and a new current version starting at ``v``: intervals never overlap and
  ``(keys, valid_from)`` stays unique even when an event timestamp does not advance.
- A source valid_from is ``event_timestamp_column`` (``now()`` when that is NULL or not
  configured); ``now()`` is the transaction's start, the same for every statement.
- A source key with no current version (new, deleted earlier, or expired) gets one,
  starting no earlier than the end of its latest version. That lookup (one index probe
  per new key) is only emitted when history without a current version or a
  non-advancing valid_from is possible (handle_deletes, ttl, event_timestamp_column);
  otherwise every stored key has a current version and the run time is later than any
  stored valid_from, so new versions simply start at the run time. With ``ttl`` set, a key whose
  latest version was expired and whose source row is that very version (same hash, no
  later valid_from) is not re-inserted: nothing new arrived.
- ``handle_deletes`` (soft or hard, both keep history): a current version whose key is
  absent from the snapshot is closed at ``GREATEST(now(), valid_from)``. Only current
  versions are closed, so a deleted key is never tombstoned twice; closed history is
  never rewritten.
- ``ttl``: before the sync, a current version with ``valid_from + ttl <= now()`` is
  closed at ``valid_from + ttl``; a new version already that old is inserted closed
  (``valid_to = valid_from + ttl``, not current). Both count as expired.
- A stored ``valid_from`` after the run time (an event time ahead of the clock) makes
  the planner take the latest-version lookup, so the next version starts after it.

Statements, in the shape of hand-written SCD2 SQL (measured: the one-statement form
that fed the INSERT from the UPDATE's RETURNING was 1.3-1.5x slower, because it
materializes every source row): (1) a narrow count of the source rows (same-DB, or when
a watermark is needed — the cross-DB path knows the count from its COPY); (2) one
UPDATE closing changed current versions — with deletes, a sibling CTE closing absent
keys (disjoint rows); (3) one INSERT of a current version for every source key that has
none, by an anti-join (NOT EXISTS, which stays a hash anti-join on large inputs) against
current versions, served and guarded by the partial unique index
``… (keys) WHERE is_current``. The same-DB path therefore evaluates the source query in
each statement, as hand-written SQL does.
"""

from __future__ import annotations

from datetime import timedelta

from psycopg import sql

from ematix_flow._engine.sql_common import (
    HASH,
    VALID_FROM,
    SqlContext,
    cols,
    keys_match,
    unchanged_by_equality,
)

__all__ = ["scd2_close_sql", "scd2_insert_sql", "source_count_sql", "ttl_sql"]

_EPS = sql.SQL("interval '1 microsecond'")


def _interval(ttl: timedelta) -> sql.Composable:
    return sql.SQL("CAST({} AS interval)").format(
        sql.Literal(f"{ttl.days} days {ttl.seconds} seconds {ttl.microseconds} microseconds")
    )


def ttl_sql(ctx: SqlContext, ttl: timedelta) -> sql.Composable:
    interval = _interval(ttl)
    return sql.SQL(
        "WITH x AS (\n  UPDATE {t} SET is_current = false, valid_to = valid_from + {i}\n"
        "  WHERE is_current AND valid_from + {i} <= now()\n  RETURNING 1\n)\n"
        "SELECT count(*) AS expired FROM x"
    ).format(t=ctx.target, i=interval)


def source_count_sql(ctx: SqlContext) -> sql.Composable:
    """``source_rows`` (and the new watermark): a narrow scan — PostgreSQL drops the
    casts and the hash nobody reads."""
    return sql.SQL("WITH {}\nSELECT s.* FROM {}").format(ctx.src_cte(), ctx.source_stats())


def _not_equal(ctx: SqlContext) -> sql.Composable:
    """`` AND NOT (<compared columns equal>)`` where equality proves the stored hash
    (:func:`unchanged_by_equality`): most rows of a re-sync are unchanged, and this skips
    hashing them (measured: the hash was over half of the close's time)."""
    equal = unchanged_by_equality(ctx.table, ctx.compare, "t", "s")
    return sql.SQL("") if equal is None else sql.SQL(" AND NOT {}").format(equal)


def scd2_close_sql(ctx: SqlContext, *, handle_deletes: str | None) -> sql.Composable:
    """Close the current versions whose hash changed (and, with deletes, those whose key
    is absent); ``updated`` and ``deleted`` counts."""
    k = ctx.keys
    closed = sql.SQL(
        "closed AS (\n  UPDATE {t} AS t SET is_current = false, "
        "valid_to = GREATEST(s.{vf}, t.valid_from + {eps})\n"
        "  FROM src AS s\n"
        "  WHERE t.is_current AND {match}{equal} AND t.row_hash IS DISTINCT FROM s.{h}\n"
        "  RETURNING 1\n)"
    ).format(
        t=ctx.target,
        vf=sql.Identifier(VALID_FROM),
        eps=_EPS,
        match=keys_match(k, "t", "s"),
        equal=_not_equal(ctx),
        h=sql.Identifier(HASH),
    )
    ctes = [ctx.src_cte(), closed]
    measures = [sql.SQL("(SELECT count(*) FROM closed) AS updated")]
    if handle_deletes:
        ctes.append(
            sql.SQL(
                "gone AS (\n  UPDATE {t} AS t SET is_current = false, "
                "valid_to = GREATEST(now(), t.valid_from)\n"
                "  WHERE t.is_current AND NOT EXISTS (SELECT 1 FROM src AS s WHERE {match})\n"
                "  RETURNING 1\n)"
            ).format(t=ctx.target, match=keys_match(k, "s", "t"))
        )
        measures.append(sql.SQL("(SELECT count(*) FROM gone) AS deleted"))
    return sql.SQL("WITH {}\nSELECT {}").format(
        sql.SQL(",\n").join(ctes), sql.SQL(", ").join(measures)
    )


def scd2_insert_sql(
    ctx: SqlContext,
    *,
    handle_deletes: str | None,
    ttl: timedelta | None,
    future_valid_from: bool = False,
) -> sql.Composable:
    """Insert a version for every source key without a current one (new keys, keys just
    closed as changed, returning keys); ``written`` count, and ``expired_new``: versions
    inserted already older than ``ttl`` (inserted closed, not current).

    ``future_valid_from``: the target holds a version starting after the run time (an
    event time ahead of the clock): new versions must then start after it too."""
    names = ctx.names
    k = ctx.keys
    ttl_i = _interval(ttl) if ttl is not None else None
    unchanged_latest = (
        # the key's latest version was expired by ttl and the source row is that very
        # version: nothing new arrived (a version closed as deleted does come back)
        sql.SQL(
            "\n    AND NOT (l.row_hash IS NOT DISTINCT FROM s.{h} AND l.valid_from >= s.{vf} "
            "AND l.valid_to = l.valid_from + {i})"
        ).format(h=sql.Identifier(HASH), vf=sql.Identifier(VALID_FROM), i=ttl_i)
        if ttl_i is not None
        else sql.SQL("")
    )
    if handle_deletes or ttl is not None or ctx.event_timestamp_column or future_valid_from:
        # A key may have closed history (just closed, deleted, expired) and a valid_from
        # that does not advance: start at the end of its latest version.
        new_rows = sql.SQL(
            "    SELECT {sc}, GREATEST(s.{vf}, l.valid_from + {eps}, l.valid_to) AS {nv}, "
            "s.{h} AS {nh}\n"
            "    FROM src AS s LEFT JOIN LATERAL (\n"
            "      SELECT h.valid_from, h.valid_to, h.row_hash FROM {t} AS h WHERE {hs_match}\n"
            "      ORDER BY h.valid_from DESC LIMIT 1\n    ) AS l ON true\n"
        )
    else:
        # valid_from is the run time, later than any stored valid_from or valid_to
        # (those come from earlier runs): no lookup of the latest version is needed.
        new_rows = sql.SQL("    SELECT {sc}, s.{vf} AS {nv}, s.{h} AS {nh}\n    FROM src AS s\n")
    nv, nh = sql.Identifier("__ef_new_vf"), sql.Identifier("__ef_new_hash")
    if ttl_i is None:
        closing = sql.SQL("NULL, true")
    else:
        # already older than ttl: inserted expired (closed at valid_from + ttl)
        closing = sql.SQL(
            "CASE WHEN n.{nv} + {i} <= now() THEN n.{nv} + {i} END, n.{nv} + {i} > now()"
        ).format(nv=nv, i=ttl_i)
    ins = sql.SQL(
        "ins AS (\n  INSERT INTO {t} ({c}, valid_from, valid_to, is_current, row_hash)\n"
        "  SELECT {nc}, n.{nv}, {closing}, n.{nh} FROM (\n"
        "{new_rows}"
        "    WHERE NOT EXISTS (SELECT 1 FROM {t} AS cur WHERE cur.is_current AND {cs_match}){u}\n"
        "  ) AS n\n"
        "  RETURNING is_current\n)"
    ).format(
        t=ctx.target,
        c=cols(names),
        nc=cols(names, "n"),
        nv=nv,
        nh=nh,
        closing=closing,
        cs_match=keys_match(k, "cur", "s"),
        u=unchanged_latest,
        new_rows=new_rows.format(
            sc=cols(names, "s"),
            vf=sql.Identifier(VALID_FROM),
            eps=_EPS,
            h=sql.Identifier(HASH),
            t=ctx.target,
            hs_match=keys_match(k, "h", "s"),
            nv=nv,
            nh=nh,
        ),
    )
    return sql.SQL(
        "WITH {},\n{}\nSELECT count(*) AS written, "
        "count(*) FILTER (WHERE NOT is_current) AS expired_new FROM ins"
    ).format(ctx.src_cte(), ins)
