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
    if state in ("23505", "21000") and ctx.batch_keys:
        found = _probe(conn, duplicates_sql(ctx))
        if isinstance(found, list) and found:
            return duplicates_error(found, ctx, where)
        constraint = getattr(exc.diag, "constraint_name", None)
        if state == "23505" and constraint and _is_primary_key(conn, ctx, constraint):
            return SyncError(
                f"{where}: step {step!r}: {message}. The rows are matched by the keys "
                f"({', '.join(ctx.keys)}), which are not the primary key, and a source row "
                "would give its matched target row a primary key another row holds. Nothing "
                "was written. Fix the source rows, or match by the primary key (keys=)."
            )
        if state == "23505" and constraint:
            return SyncError(
                f"{where}: step {step!r}: {message}. Another target row already holds "
                f"that value of unique constraint {constraint!r} — e.g. two rows swapping a "
                "unique value. The rows are matched by the keys "
                f"({', '.join(ctx.keys)}), and a constraint that is checked per row cannot "
                "pass through the moment both hold the value. Nothing was written. Fix: "
                f"make {constraint!r} DEFERRABLE (ALTER TABLE … DROP CONSTRAINT …, then ADD "
                "CONSTRAINT … UNIQUE (…) DEFERRABLE; tables ematix-flow creates have it), or "
                "change one row in the source first."
            )
    if state == "23502":
        column = getattr(exc.diag, "column_name", None)
        return SourceError(
            f"{where}, column {column!r}: the source holds NULL for a column the target "
            f"declares NOT NULL. Filter or COALESCE it in the source query, or declare the "
            f"column nullable. ({message})"
        )
    if state.startswith("22"):
        failed = _source_fails(conn, ctx, state)
        if failed is not None:
            return SourceError(
                f"{where}: the source query failed: {driver_message(failed)}. Fix the source "
                "query (the error is raised while reading it, before any value reaches the "
                "target)."
            )
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


def _is_primary_key(conn: psycopg.Connection[Any], ctx: SqlContext, constraint: str) -> bool:
    found = _probe(
        conn,
        sql.SQL(
            "SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass({}) AND conname = {} "
            "AND contype = 'p'"
        ).format(sql.Literal(ctx.target.as_string(None)), sql.Literal(constraint)),
    )
    return isinstance(found, list) and bool(found)


def duplicates_sql(ctx: SqlContext, *, detail: bool = True) -> sql.Composable:
    """The keys that appear more than once in the batch (up to :data:`SAMPLE_KEYS`,
    with their count and the number of such keys), read from the source relation with
    only the key columns cast: one aggregate over the batch.

    ``detail=False`` is the check every run makes: any duplicated key, no count of
    them and no order (one hash aggregate that stops at the first group found; the
    counted, ordered form costs twice as much, so it runs only once one is found)."""
    keys = ctx.batch_keys
    items = sql.SQL(", ").join(
        sql.SQL("CAST({} AS {}) AS {}").format(
            sql.Identifier("q", k), sql.SQL(cast_type(ctx.table.column(k))), sql.Identifier(k)
        )
        for k in keys
    )
    names = sql.SQL(", ").join(map(sql.Identifier, keys))
    if not detail:
        return sql.SQL(
            "SELECT {names} FROM (SELECT {items} FROM {rel}) AS d GROUP BY {names} "
            "HAVING count(*) > 1 LIMIT 1"
        ).format(names=names, items=items, rel=ctx.source_relation())
    return sql.SQL(
        "SELECT {names}, count(*) AS __ef_n, count(*) OVER () AS __ef_total "
        "FROM (SELECT {items} FROM {rel}) AS d GROUP BY {names} HAVING count(*) > 1 "
        "ORDER BY {order} LIMIT {limit}"
    ).format(
        names=names,
        items=items,
        rel=ctx.source_relation(),
        # by position: a key column may itself be called n or total
        order=sql.SQL(", ").join(sql.SQL(str(i + 1)) for i in range(len(keys))),
        limit=sql.Literal(SAMPLE_KEYS),
    )


def duplicates_error(found: list[tuple[Any, ...]], ctx: SqlContext, where: str) -> SourceError:
    """The error for the rows :func:`duplicates_sql` found."""
    keys = ctx.batch_keys
    total = found[0][-1]
    k = len(keys)
    samples = ", ".join("(" + ", ".join(repr(v) for v in row[:k]) + f") ×{row[k]}" for row in found)
    return SourceError(
        f"{where}, key column(s) ({', '.join(keys)}): the source batch holds "
        f"{total} duplicated key(s), e.g. {samples}. Each key must appear once per "
        "batch: de-duplicate the source query (e.g. SELECT DISTINCT ON (keys) … "
        "ORDER BY keys, <newest first>) or choose keys that identify a row. Nothing was "
        "written."
    )


def _source_fails(
    conn: psycopg.Connection[Any], ctx: SqlContext, state: str
) -> psycopg.Error | None:
    """The error of reading the source alone (every column evaluated, nothing cast),
    when it is the same kind as the statement's: then the source is at fault."""
    found = _probe(conn, sql.SQL("SELECT count(q.*) FROM {}").format(ctx.source_relation()))
    if isinstance(found, psycopg.Error) and (found.sqlstate or "") == state:
        return found
    return None


def untranslatable(
    exc: psycopg.Error,
    source: psycopg.Connection[Any],
    target: psycopg.Connection[Any],
    ctx: SqlContext,
    scols: Any,
    where: str,
) -> EmatixFlowError:
    """A text value the target database's encoding cannot hold (cross-DB): find the
    column and the first such row in the source, and say so. Runs only after the COPY
    failed; the target transaction is rolled back by the caller, so nothing is written.
    """
    from psycopg._encodings import pg2pyenc

    enc_name = _server_encoding(target)
    try:
        codec = pg2pyenc(enc_name.encode())
    except Exception:  # an encoding Python does not know: report what we have
        codec = None
    text_cols = [c.name for c in ctx.declared if _is_text(c.name, scols)]
    culprit: tuple[str, Any, str] | None = None
    if codec is not None and text_cols:
        keys = ctx.keys or ctx.names[:1]
        items = sql.SQL(", ").join(
            [sql.Identifier("q", k) for k in keys]
            + [sql.SQL("CAST({} AS text)").format(sql.Identifier("q", c)) for c in text_cols]
        )
        where_wm = (
            ctx.watermark_where()
            if ctx.incremental_column and ctx.watermark_filter
            else sql.SQL("")
        )
        query = sql.SQL("SELECT {} FROM (\n{}\n) AS q{}").format(
            items, sql.SQL(ctx.source_sql), where_wm
        )
        try:
            with source.transaction(), source.cursor(name="ematix_flow_encoding_probe") as cur:
                cur.itersize = 2000
                for values in cur.execute(query):
                    for name, value in zip(text_cols, values[len(keys) :], strict=True):
                        if value is None:
                            continue
                        try:
                            value.encode(codec)
                        except UnicodeEncodeError as bad:
                            key = ", ".join(
                                f"{k}={v!r}" for k, v in zip(keys, values[: len(keys)], strict=True)
                            )
                            culprit = (name, key, value[bad.start : bad.end])
                            break
                    if culprit is not None:
                        break
        except psycopg.Error:
            culprit = None
    if culprit is not None:
        name, key, chars = culprit
        return SourceError(
            f"{where}, column {name!r}: the source row with {key} holds {chars!r}, which the "
            f"target database's encoding {enc_name} cannot represent. Nothing was written. "
            "Replace or drop such characters in the source query, or use a target database "
            f"whose encoding can hold them (UTF8). ({driver_message(exc)})"
        )
    return SourceError(
        f"{where}: a source text value cannot be stored in the target database's encoding "
        f"{enc_name}: {driver_message(exc)}. Nothing was written."
    )


def _server_encoding(conn: psycopg.Connection[Any]) -> str:
    # reported by the server at connect time: no query (the transaction is aborted)
    return conn.info.parameter_status("server_encoding") or "?"


def _is_text(name: str, scols: Any) -> bool:
    for c in scols or ():
        if c.name == name:
            base = c.type.removesuffix("[]")
            return (
                c.travels_as_text
                or base
                in (
                    "text",
                    "name",
                    "json",
                    "jsonb",
                    "xml",
                )
                or base.startswith(("character", '"char"'))
            )
    return False


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
