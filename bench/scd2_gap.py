"""Where same-DB scd2's time goes, next to hand-written SCD2: one candidate at a time.

Usage (from the repository root)::

    python -m bench.scd2_gap                 # N = 1,000,000, medians of 3 runs
    python -m bench.scd2_gap --rows 200000 --repeat 5

The bench gates same-DB scd2 against hand-written SCD2 on a table whose only index is
the partial unique index on the key ``WHERE is_current`` (:func:`bench._limits.hand_scd2`).
This probe measures, interleaved, for the initial load and a 10% re-sync:

A. that yardstick; A'. the same with the engine's canonical row hash for md5(ROW(…));
B. the same statements on a table that also has the engine's ``(id, valid_from)``
   primary key;
C. the engine's own statements, taken from its plan (duplicate-key check, source count,
   close, insert; each timed), run by hand as the engine runs them (one REPEATABLE READ
   transaction, a savepoint each; a first load creates the table in it) on table A's
   shape;
D. the same on table B's shape (the engine's DDL plus the ``(id, valid_from)`` primary
   key, which the engine now builds only where the latest-version lookup needs it);
E. the engine's run (``pipeline.run`` in a fresh process), which adds connecting,
   planning, inspecting, DDL and its state rows to D;

and the row hash alone (``SELECT max(hash)`` over the source, as the bench's row-hash
rows do). A' - A is the hash's cost; B - A and D - C the primary key's; C - A less the
check and count the engine's statement shape and hash; E - D the run's fixed cost.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import _limits
from bench._data import COLUMNS, SOURCE_QUERY, change_ten_percent, create_items
from bench.run import (
    BenchError,
    _admin,
    _db_url,
    _differences,
    _drop,
    _drop_database,
    _log,
    _settle,
    run_engine,
    serve,
)

__all__ = ["main", "probe"]

#: (key, label) of each variant, in the order they run.
VARIANTS = (
    ("hand", "A hand-written SCD2 (partial unique index only)"),
    ("hand_canon", "A' A with the engine's canonical row hash"),
    ("hand_pk", "B hand-written SCD2 + (id, valid_from) primary key"),
    ("stmts", "C engine statements, partial unique index only"),
    ("stmts_pk", "D engine statements, engine's table (+ primary key)"),
    ("engine", "E engine run (pipeline.run)"),
)
_STATEMENT_KINDS = ("setting", "check", "data", "load")


def _engine_plan(url: str, table: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The engine's plan of a same-DB scd2 sync from ``public.items`` into
    ``bench.<table>`` as it stands now (absent: a first load): its DDL, and (label, SQL)
    of every other statement it runs before its state rows (checks, settings, data; a
    first load's load and the keys and indexes it builds after it)."""
    from bench._worker import items_table
    from ematix_flow import _core
    from ematix_flow._engine import TargetOptions, plan
    from ematix_flow.source import Source

    conn = _core.connect(url)
    steps = plan(
        TargetOptions(table=items_table(table).__table_spec__, mode="scd2", keys=("id",)),
        Source.postgres_query(conn, SOURCE_QUERY),
        conn,
        pipeline="bench_scd2_gap",
    ).steps
    ddl = [s.sql for s in steps if s.kind == "ddl"]
    return ddl, [(s.label, s.sql) for s in steps if s.kind in _STATEMENT_KINDS]


_INLINE_PK = re.compile(r",\s*CONSTRAINT \S+ PRIMARY KEY \([^)]*\)")
_ADD_PK = re.compile(r"^\s*ALTER TABLE .* ADD CONSTRAINT \S+ PRIMARY KEY", re.DOTALL)


def _without_primary_key(
    ddl: list[str], statements: list[tuple[str, str]], old: str, new: str
) -> tuple[list[str], list[tuple[str, str]]]:
    """The engine's plan for table ``old`` rewritten for table ``new`` (index and
    constraint names follow), without its primary key: not declared in the CREATE
    TABLE, nor added after a first load."""
    return (
        [_INLINE_PK.sub("", text.replace(old, new)) for text in ddl],
        [(label, text.replace(old, new)) for label, text in statements if not _ADD_PK.match(text)],
    )


def _run_statements(
    url: str, ddl: list[str], statements: list[tuple[str, str]]
) -> tuple[float, dict[str, float]]:
    """``ddl``, then the statements, as the engine runs them: one REPEATABLE READ
    transaction in a pinned session, each statement in a savepoint. The total and each
    statement's time."""
    from ematix_flow._session import pin

    each: dict[str, float] = {}
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn:
        pin(conn)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            for text in ddl:
                conn.execute(text)
            for label, text in statements:
                t = time.perf_counter()
                with conn.transaction():
                    conn.execute(text)
                each[label] = time.perf_counter() - t
    return time.perf_counter() - t0, each


def probe(server_url: str, *, rows: int, repeat: int) -> dict[str, Any]:
    """Measure the variants of the module docstring; every sample, by phase."""
    db = f"bench_{uuid.uuid4().hex[:8]}_gap"
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    url = _db_url(server_url, db)
    out: dict[str, Any] = {"rows": rows, "repeat": repeat, "samples": {}, "statements": {}}

    def sample(phase: str, key: str, seconds: float) -> None:
        out["samples"].setdefault(phase, {}).setdefault(key, []).append(seconds)

    tables = {key: f"gap_{key}" for key, _ in VARIANTS}
    try:
        _log(f"generating {rows:,} rows")
        with _admin(url) as conn:
            create_items(conn, rows)
            conn.execute("CREATE SCHEMA bench")
        for phase in ("initial", "changed"):
            for i in range(repeat):
                if phase == "initial":
                    _drop(url, *(f"bench.{t}" for t in tables.values()))
                    with _admin(url) as conn:
                        _limits.create_limit_scd2_target(conn, tables["hand"])
                        _limits.create_limit_scd2_target(conn, tables["hand_canon"])
                        _limits.create_limit_scd2_target(conn, tables["hand_pk"], primary_key=True)
                else:
                    with _admin(url) as conn:
                        change_ten_percent(conn, i + 1)
                # D runs the engine's plan for its table (created inside the timed
                # transaction on a first load, as the engine does); C the same, renamed,
                # without the primary key
                ddl_pk, stmts_pk = _engine_plan(url, tables["stmts_pk"])
                # the engine builds the versions' key only where a lookup needs it; D
                # adds it to a first load's table (built after the load, as the engine
                # builds keys), so D - C stays the key's cost
                ddl_pk = ddl_pk if phase == "initial" else []
                if phase == "initial" and not any("PRIMARY KEY" in s for _, s in stmts_pk):
                    stmts_pk = [
                        *stmts_pk,
                        (
                            "build the versions' primary key",
                            f"ALTER TABLE bench.{tables['stmts_pk']} "
                            "ADD CONSTRAINT gap_stmts_pk_versions PRIMARY KEY (id, valid_from)",
                        ),
                    ]
                plans = {
                    "stmts_pk": (ddl_pk, stmts_pk),
                    "stmts": _without_primary_key(
                        ddl_pk, stmts_pk, tables["stmts_pk"], tables["stmts"]
                    ),
                }
                for key, _ in VARIANTS:
                    table = tables[key]
                    _settle(url, *([f"bench.{table}"] if phase == "changed" else []))
                    if key.startswith("hand"):
                        t = _limits.hand_scd2(
                            url,
                            table,
                            **(
                                {"row_hash": _limits.canonical_hash("s")}
                                if key == "hand_canon"
                                else {}
                            ),
                        )
                        seconds = t.seconds
                        for label, part in t.phases:
                            sample(phase, f"{key}: {label}", part)
                    elif key.startswith("stmts"):
                        seconds, each = _run_statements(url, *plans[key])
                        for label, part in each.items():
                            sample(phase, f"{key}: {label}", part)
                    else:
                        r = run_engine(
                            {
                                "mode": "scd2",
                                "table": table,
                                "source_url": url,
                                "target_url": url,
                                "query": SOURCE_QUERY,
                            }
                        )
                        seconds = r["seconds"]
                        for label, part in r["steps"]:
                            sample(phase, f"{key}: {label}", part)
                    sample(phase, key, seconds)
                    _log(f"{phase} {i + 1}/{repeat} {key}: {seconds:.2f}s")
            out["statements"][phase] = {k: v for k, v in plans.items()}
        # every variant wrote the same history (values and is_current)
        cols = [*COLUMNS, "is_current"]
        for key, label in VARIANTS[1:]:
            diff = _differences(url, f"bench.{tables[key]}", f"bench.{tables['hand']}", cols)
            if diff:
                raise BenchError(f"{label}: its history differs from A's by {diff} rows")
        for _ in range(repeat):
            old, new = _limits.hash_cost(url, stage=False)
            sample("hash", "md5(ROW(…)::text)", old)
            sample("hash", "canonical row hash", new)
    finally:
        _drop_database(server_url, db)
    return out


def format_report(report: dict[str, Any]) -> str:
    med = {
        phase: {k: statistics.median(v) for k, v in samples.items()}
        for phase, samples in report["samples"].items()
    }
    ini, chg = med["initial"], med["changed"]
    lines = [
        f"{'variant':<58} | initial          | 10% changed",
        "-" * 59 + "+" + "-" * 18 + "+" + "-" * 18,
    ]
    for key, label in VARIANTS:
        cells = [f"{m[key]:6.2f} s  {m[key] / m['hand']:.2f}×" for m in (ini, chg)]
        lines.append(f"{label:<58} | {cells[0]:<16} | {cells[1]}")
        steps = [k for k in ini if k.startswith(f"{key}: ")]
        for step in steps:
            a, b = ini.get(step, 0.0), chg.get(step, 0.0)
            if max(a, b) >= 0.02:
                lines.append(f"    {step.split(': ', 1)[1]:<54} | {a:6.2f} s         | {b:6.2f} s")
    lines += [
        "",
        f"N = {report['rows']:,}; medians of {report['repeat']} runs; ratios against A.",
        "row hash alone over N rows: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in med["hash"].items()),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.scd2_gap", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="N (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--server-url", help="use this PostgreSQL server (needs CREATEDB)")
    parser.add_argument("--json", dest="json_path", help="also write every sample here")
    args = parser.parse_args(argv)
    with serve(args.server_url) as server_url:
        report = probe(server_url, rows=args.rows, repeat=args.repeat)
    print(format_report(report))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
    sys.exit(0)
