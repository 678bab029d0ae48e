"""The ``scd2`` statements: close changed current versions and insert new ones, in one
statement; optionally expire versions older than ``ttl`` first.

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
  closed at ``valid_from + ttl``.

The closing UPDATE, the delete UPDATE and the INSERT run as data-modifying CTEs of one
statement (one pass over the source). They touch disjoint rows; the INSERT takes the
changed rows' new values straight from the UPDATE's RETURNING (no second join with the
source) and the new keys by an anti-join (NOT EXISTS,
which stays a hash anti-join on large inputs) against current versions, which the
partial unique index ``… (keys) WHERE is_current`` serves and guards.
"""

from __future__ import annotations

from datetime import timedelta

from psycopg import sql

from ematix_flow._engine.sql_common import (
    HASH,
    VALID_FROM,
    SqlContext,
    cols,
    counts_select,
    keys_match,
)

__all__ = ["scd2_sql", "ttl_sql"]

_EPS = sql.SQL("interval '1 microsecond'")


def ttl_sql(ctx: SqlContext, ttl: timedelta) -> sql.Composable:
    interval = sql.SQL("CAST({} AS interval)").format(
        sql.Literal(f"{ttl.days} days {ttl.seconds} seconds {ttl.microseconds} microseconds")
    )
    return sql.SQL(
        "WITH x AS (\n  UPDATE {t} SET is_current = false, valid_to = valid_from + {i}\n"
        "  WHERE is_current AND valid_from + {i} <= now()\n  RETURNING 1\n)\n"
        "SELECT count(*) AS expired FROM x"
    ).format(t=ctx.target, i=interval)


def scd2_sql(
    ctx: SqlContext, *, handle_deletes: str | None, ttl: timedelta | None
) -> sql.Composable:
    names = ctx.names
    k = ctx.keys
    closed = sql.SQL(
        "closed AS (\n  UPDATE {t} AS t SET is_current = false, "
        "valid_to = GREATEST(s.{vf}, t.valid_from + {eps})\n"
        "  FROM src AS s\n  WHERE t.is_current AND {match} AND t.row_hash IS DISTINCT FROM s.{h}\n"
        "  RETURNING {sk}, s.{h} AS {h}, t.valid_to\n)"
    ).format(
        t=ctx.target,
        vf=sql.Identifier(VALID_FROM),
        eps=_EPS,
        match=keys_match(k, "t", "s"),
        h=sql.Identifier(HASH),
        sk=cols(names, "s"),
    )
    ctes = [ctx.src_cte(), closed]
    if handle_deletes:
        ctes.append(
            sql.SQL(
                "gone AS (\n  UPDATE {t} AS t SET is_current = false, "
                "valid_to = GREATEST(now(), t.valid_from)\n"
                "  WHERE t.is_current AND NOT EXISTS (SELECT 1 FROM src AS s WHERE {match})\n"
                "  RETURNING 1\n)"
            ).format(t=ctx.target, match=keys_match(k, "s", "t"))
        )
    unchanged_latest = (
        sql.SQL(
            "\n    AND NOT (l.row_hash IS NOT DISTINCT FROM s.{h} AND l.valid_from >= s.{vf})"
        ).format(h=sql.Identifier(HASH), vf=sql.Identifier(VALID_FROM))
        if ttl is not None
        else sql.SQL("")
    )
    if handle_deletes or ttl is not None or ctx.event_timestamp_column:
        # A key may have closed history and no current version (deleted, expired), or
        # an event time that does not advance: start after its latest version.
        new_rows = sql.SQL(
            "  SELECT {sc}, GREATEST(s.{vf}, l.valid_from + {eps}, l.valid_to), NULL, true, s.{h}\n"
            "  FROM src AS s LEFT JOIN LATERAL (\n"
            "    SELECT h.valid_from, h.valid_to, h.row_hash FROM {t} AS h WHERE {hs_match}\n"
            "    ORDER BY h.valid_from DESC LIMIT 1\n  ) AS l ON true\n"
        )
    else:
        # Every key in the table has a current version and valid_from is the run time,
        # later than any earlier run's: no lookup of the latest version is needed.
        new_rows = sql.SQL("  SELECT {sc}, s.{vf}, NULL, true, s.{h}\n  FROM src AS s\n")
    ins = sql.SQL(
        "ins AS (\n  INSERT INTO {t} ({c}, valid_from, valid_to, is_current, row_hash)\n"
        "  SELECT {cc}, c.valid_to, NULL::timestamptz, true, c.{h}\n"
        "  FROM closed AS c\n"
        "  UNION ALL\n"
        "{new_rows}"
        "  WHERE NOT EXISTS (SELECT 1 FROM {t} AS cur WHERE cur.is_current AND {cs_match}){u}\n"
        "  RETURNING 1\n)"
    ).format(
        t=ctx.target,
        c=cols(names),
        sc=cols(names, "s"),
        h=sql.Identifier(HASH),
        cc=cols(names, "c"),
        cs_match=keys_match(k, "cur", "s"),
        u=unchanged_latest,
        new_rows=new_rows.format(
            sc=cols(names, "s"),
            vf=sql.Identifier(VALID_FROM),
            eps=_EPS,
            h=sql.Identifier(HASH),
            t=ctx.target,
            hs_match=keys_match(k, "h", "s"),
        ),
    )
    ctes.append(ins)
    measures: dict[str, sql.Composable] = {
        "inserted": sql.SQL("(SELECT count(*) FROM ins) - (SELECT count(*) FROM closed)"),
        "updated": sql.SQL("(SELECT count(*) FROM closed)"),
        "written": sql.SQL("(SELECT count(*) FROM ins)"),
    }
    if handle_deletes:
        measures["deleted"] = sql.SQL("(SELECT count(*) FROM gone)")
    return sql.SQL("WITH {}\n{}").format(sql.SQL(",\n").join(ctes), counts_select(ctx, measures))
