"""The ``merge`` and ``scd1`` statements: one upsert, plus the delete handling, in one
statement (one pass over the source on either path).

``INSERT … ON CONFLICT (keys) DO UPDATE … WHERE <row differs>``: a row whose compared
values are unchanged is not written (``IS DISTINCT FROM`` on the update columns for
merge, on ``row_hash`` of the compare columns for scd1), so counts are honest and the
table does not bloat. ``RETURNING (xmax = 0)`` tells inserts from updates.

Deletes (keys absent from the snapshot) run as a sibling data-modifying CTE: it only
touches keys the upsert does not, so both see one snapshot safely. ``soft`` stamps
``_deleted_at`` once (rows already flagged are left alone: no duplicate tombstones); a
key that comes back is upserted with ``_deleted_at`` cleared.
"""

from __future__ import annotations

from psycopg import sql

from ematix_flow._engine.sql_common import (
    HASH,
    SqlContext,
    cols,
    counts_select,
    keys_match,
    unchanged_by_equality,
)

__all__ = ["merge_sql"]


def _unchanged(ctx: SqlContext, *, scd1: bool, soft: bool, has_update: bool) -> sql.Composable:
    """The condition under which a stored row ``o`` already holds source row ``s`` (the
    upsert's ``WHERE`` negated): such rows are left out before the upsert, by one hash
    anti-join, rather than each proposed, its conflict found and its row locked."""
    if not has_update:
        return sql.SQL("")
    same: list[sql.Composable] = []
    if scd1:
        hashed = sql.SQL("o.row_hash IS NOT DISTINCT FROM s.{}").format(sql.Identifier(HASH))
        equal = unchanged_by_equality(ctx.table, ctx.compare, "o", "s")
        same.append(hashed if equal is None else sql.SQL("({} OR {})").format(equal, hashed))
    elif ctx.update:
        same.append(
            sql.SQL("({}) IS NOT DISTINCT FROM ({})").format(
                cols(ctx.update, "o"), cols(ctx.update, "s")
            )
        )
    if soft:
        same.append(sql.SQL("o._deleted_at IS NULL"))
    return sql.SQL("").join(sql.SQL(" AND {}").format(c) for c in same)


def merge_sql(ctx: SqlContext, *, mode: str, handle_deletes: str | None) -> sql.Composable:
    scd1 = mode == "scd1"
    soft = handle_deletes == "soft"
    names = ctx.names
    insert_cols: list[sql.Composable] = [cols(names)]
    select_cols: list[sql.Composable] = [cols(names)]
    if scd1:
        insert_cols.append(sql.SQL("row_hash, _updated_at"))
        select_cols.append(sql.SQL("{}, now()").format(sql.Identifier(HASH)))
    sets = [
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in ctx.update
    ]
    if scd1:
        sets.append(sql.SQL("row_hash = EXCLUDED.row_hash, _updated_at = now()"))
        differs: sql.Composable = sql.SQL("t.row_hash IS DISTINCT FROM EXCLUDED.row_hash")
    elif ctx.update:
        differs = sql.SQL("({}) IS DISTINCT FROM ({})").format(
            cols(ctx.update, "t"), cols(ctx.update, "excluded")
        )
    else:
        differs = sql.SQL("false")
    if soft:
        sets.append(sql.SQL("_deleted_at = NULL"))
        differs = sql.SQL("{} OR t._deleted_at IS NOT NULL").format(differs)
    if sets:
        action = sql.SQL("DO UPDATE SET {} WHERE {}").format(sql.SQL(", ").join(sets), differs)
    else:
        action = sql.SQL("DO NOTHING")
    up = sql.SQL(
        "up AS (\n  INSERT INTO {t} AS t ({ic})\n  SELECT {sc} FROM src AS s\n"
        "  WHERE NOT EXISTS (SELECT 1 FROM {t} AS o WHERE {match}{same})\n"
        "  ON CONFLICT ({k}) {action}\n  RETURNING (xmax = 0) AS inserted\n)"
    ).format(
        t=ctx.target,
        ic=sql.SQL(", ").join(insert_cols),
        sc=sql.SQL(", ").join(select_cols),
        match=keys_match(ctx.keys, "o", "s"),
        same=_unchanged(ctx, scd1=scd1, soft=soft, has_update=bool(sets)),
        k=cols(ctx.keys),
        action=action,
    )
    ctes = [ctx.src_cte(), up]
    measures: dict[str, sql.Composable] = {
        "inserted": sql.SQL("(SELECT count(*) FROM up WHERE inserted)"),
        "updated": sql.SQL("(SELECT count(*) FROM up WHERE NOT inserted)"),
    }
    absent = sql.SQL("NOT EXISTS (SELECT 1 FROM src AS s WHERE {})").format(
        keys_match(ctx.keys, "s", "t")
    )
    if handle_deletes == "hard":
        ctes.append(
            sql.SQL("del AS (\n  DELETE FROM {} AS t WHERE {}\n  RETURNING 1\n)").format(
                ctx.target, absent
            )
        )
    elif soft:
        stamp = sql.SQL(
            "_deleted_at = now(), _updated_at = now()" if scd1 else "_deleted_at = now()"
        )
        ctes.append(
            sql.SQL(
                "del AS (\n  UPDATE {} AS t SET {}\n  WHERE t._deleted_at IS NULL AND {}\n"
                "  RETURNING 1\n)"
            ).format(ctx.target, stamp, absent)
        )
    if handle_deletes:
        measures["deleted"] = sql.SQL("(SELECT count(*) FROM del)")
    return sql.SQL("WITH {}\n{}").format(sql.SQL(",\n").join(ctes), counts_select(ctx, measures))
