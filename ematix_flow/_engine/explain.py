"""Turn a driver error raised by a data step into an error a user can act on.

Called by the executor while its transaction is still open (the failed statement ran in
a savepoint), so the diagnostic queries can read the same source rows — the stage on the
cross-DB path, the inlined query on the same-DB path. The diagnostics run only after a
failure, never on a successful run:

- a unique/cardinality violation → one ``GROUP BY keys HAVING count(*) > 1`` query: the
  number of duplicated keys and up to five of them;
- a NOT NULL violation → the column PostgreSQL names;
- a data exception (bad cast, overflow, value too long) → each column is cast on its
  own until one fails, so the message can name it.

Anything else becomes a :class:`SyncError` carrying the step and the driver's message.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from ematix_flow._engine.sql_common import SqlContext, cast_type
from ematix_flow._errors import EmatixFlowError, SourceError, SyncError

__all__ = ["driver_message", "explain"]

SAMPLE_KEYS = 5


def driver_message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    detail = getattr(diag, "message_detail", None) if diag is not None else None
    text = primary or " ".join(str(exc).split())
    return f"{text} ({detail})" if detail else text


def _probe(
    conn: psycopg.Connection[Any], stmt: sql.Composable
) -> Exception | list[tuple[Any, ...]]:
    try:
        with conn.transaction():
            return conn.execute(stmt).fetchall()
    except psycopg.Error as exc:
        return exc


def explain(
    exc: psycopg.Error,
    *,
    conn: psycopg.Connection[Any],
    ctx: SqlContext,
    where: str,
    step: str,
) -> EmatixFlowError:
    state = exc.sqlstate or ""
    message = driver_message(exc)
    if state in ("23505", "21000") and ctx.keys:
        found = _probe(
            conn,
            sql.SQL(
                "WITH {} SELECT {}, count(*) AS n, count(*) OVER () AS total FROM src "
                "GROUP BY {} HAVING count(*) > 1 ORDER BY {} LIMIT {}"
            ).format(
                ctx.src_cte(),
                sql.SQL(", ").join(map(sql.Identifier, ctx.keys)),
                sql.SQL(", ").join(map(sql.Identifier, ctx.keys)),
                sql.SQL(", ").join(map(sql.Identifier, ctx.keys)),
                sql.Literal(SAMPLE_KEYS),
            ),
        )
        if isinstance(found, list) and found:
            total = found[0][-1]
            k = len(ctx.keys)
            samples = ", ".join(
                "(" + ", ".join(repr(v) for v in row[:k]) + f") ×{row[k]}" for row in found
            )
            return SourceError(
                f"{where}, key column(s) ({', '.join(ctx.keys)}): the source batch holds "
                f"{total} duplicated key(s), e.g. {samples}. Each key must appear once per "
                "batch: de-duplicate the source query (e.g. SELECT DISTINCT ON (keys) … "
                "ORDER BY keys, <newest first>) or choose keys that identify a row."
            )
    if state == "23502":
        column = getattr(exc.diag, "column_name", None)
        return SourceError(
            f"{where}, column {column!r}: the source holds NULL for a column the target "
            f"declares NOT NULL. Filter or COALESCE it in the source query, or declare the "
            f"column nullable. ({message})"
        )
    if state.startswith("22"):
        column = _find_bad_column(conn, ctx, state)
        named = f", column {column!r}" if column else ""
        return SourceError(
            f"{where}{named}: a source value does not fit the target column's type: "
            f"{message}. Cast or clean the value in the source query, or change the "
            "column's declared type."
        )
    if state in ("23505", "23503", "23514"):
        return SyncError(f"{where}: step {step!r} violates a constraint of the target: {message}")
    return SyncError(f"{where}: step {step!r} failed: {message}")


def _find_bad_column(conn: psycopg.Connection[Any], ctx: SqlContext, state: str) -> str | None:
    rel = ctx.source_relation()
    for col in ctx.declared:
        q = sql.Identifier("q", col.name)
        if state == "22001" and col.type.ddl.startswith("character"):
            limit = col.type.ddl.rsplit("(", 1)[-1].rstrip(")")
            if not limit.isdigit():
                continue
            probe = sql.SQL("SELECT 1 FROM {} WHERE length(CAST({} AS text)) > {} LIMIT 1").format(
                rel, q, sql.Literal(int(limit))
            )
            found = _probe(conn, probe)
            if isinstance(found, list) and found:
                return col.name
            continue
        probe = sql.SQL("SELECT count(CAST(CAST({} AS {}) AS {})) FROM {}").format(
            q, sql.SQL(cast_type(col)), sql.SQL(col.type.ddl), rel
        )
        if isinstance(_probe(conn, probe), Exception):
            return col.name
    return None
