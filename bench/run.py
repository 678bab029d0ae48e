"""The benchmark: our engine against the physical limit, measured in the same run.

Usage (from the repository root)::

    python -m bench                   # N = 1,000,000, 3 repetitions, < 10 min on 2 cores
    python -m bench --rows 200000
    python -m bench --quick           # a small smoke run (N = 20,000, 1 repetition)
    python -m bench --json out.json   # also write every figure as JSON

It starts an embedded PostgreSQL (``--server-url`` uses an existing server instead;
its role needs CREATEDB), creates a source and a target database, generates N rows of
a 6-column table in SQL in both, and measures, as medians of ``--repeat`` runs:

(a) the physical limit of a cross-DB merge — a raw binary COPY pipe source → temp stage
    in the target plus one hand-written ``INSERT … ON CONFLICT … WHERE … IS DISTINCT
    FROM`` — initial load and a re-sync with 10% of the rows changed;
(b) our cross-DB ``merge`` (``pipeline.sync``) doing the same two loads;
(c) our same-DB ``scd2``, initial and 10%-changed, against hand-written set-based SQL
    (md5 row hash; UPDATE close + INSERT new);
(c') our same-DB ``merge``, initial and 10%-changed, against the bare
    ``INSERT … SELECT … ON CONFLICT … WHERE … IS DISTINCT FROM``;
(d) our process's peak RSS (``VmHWM``) for a cross-DB merge at N and at 5N rows.

Between measurements the tables are vacuumed and a CHECKPOINT is forced, so that no
run pays for an earlier one's writes. CHECKPOINT needs superuser or (PostgreSQL 15+)
membership in ``pg_checkpoint``; a role with neither settles by VACUUM alone, and the
report says so (``checkpoints: false``).

Each engine operation runs in a fresh subprocess (:mod:`bench._worker`), timed around
``pipeline.sync`` alone. After the timed runs the engine's targets are checked against
the hand-written ones row for row, so a fast but wrong engine cannot pass.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench import _limits
from bench._data import COLUMNS, SOURCE_QUERY, change_ten_percent, create_items, generated_query

__all__ = ["BenchError", "main", "run_bench"]

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The ratio each measurement must stay within (``None``: reported, no target).
TARGETS: dict[str, float | None] = {
    "merge_initial": 1.25,
    "merge_resync": 1.1,
    "scd2": 1.2,
    "merge_same": 1.25,
    "rss": 1.1,
    "hash": None,
}


class BenchError(RuntimeError):
    """The engine produced a wrong target or failed; the message says which."""


@dataclass
class Measured:
    """Every sample of one measurement (seconds), plus what each run reported."""

    samples: list[float] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _fmt(phases: Sequence[tuple[str, float]]) -> str:
    return "(" + ", ".join(f"{p} {v:.2f}s" for p, v in phases) + ")"


def _db_url(server_url: str, database: str) -> str:
    params = conninfo_to_dict(server_url)
    params["dbname"] = database
    return make_conninfo(**params)


def _admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def _may_checkpoint(conn: psycopg.Connection[Any]) -> bool:
    """True when the role may run CHECKPOINT: a superuser or, from PostgreSQL 15 on, a
    member of ``pg_checkpoint``."""
    return bool(
        conn.execute(
            "SELECT rolsuper OR CASE WHEN to_regrole('pg_checkpoint') IS NULL THEN false "
            "ELSE pg_has_role('pg_checkpoint', 'MEMBER') END "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()[0]
    )


def _settle(url: str, *tables: str) -> None:
    """Vacuum the given tables and checkpoint, so no run pays for an earlier one.

    Without the right to CHECKPOINT (see :func:`_may_checkpoint`) the tables are only
    vacuumed; the report says so (``checkpoints``), since a timed run may then pay for
    an earlier one's dirty pages."""
    with _admin(url) as conn:
        for t in tables:
            if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0] is not None:
                conn.execute(f"VACUUM ANALYZE {t}")
        if _may_checkpoint(conn):
            conn.execute("CHECKPOINT")


def _drop_database(server_url: str, name: str) -> None:
    """Drop a bench database. A role that is not a superuser may not terminate an
    autovacuum worker, so ``WITH (FORCE)`` fails while one is busy there (after the
    bench's loads, often): the plain DROP after ending our own sessions asks autovacuum
    to leave and waits for it."""
    ident = sql.Identifier(name)
    with _admin(server_url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
            "AND usename = current_user AND pid <> pg_backend_pid()",
            (name,),
        )
        try:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))
        except psycopg.errors.ObjectInUse:  # sessions of other roles: FORCE ends them
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def _drop(url: str, *tables: str) -> None:
    with _admin(url) as conn:
        for t in tables:
            conn.execute(f"DROP TABLE IF EXISTS {t}")


def run_engine(spec: dict[str, Any]) -> dict[str, Any]:
    """One ``pipeline.sync`` in a fresh Python process (see :mod:`bench._worker`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "bench._worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(
            f"engine run ({spec['mode']} into bench.{spec['table']}) failed with exit code "
            f"{proc.returncode}:\n{proc.stderr.strip()[-4000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _differences(url: str, a: str, b: str, columns: Sequence[str], where: str = "") -> int:
    """Rows of ``a`` not in ``b`` plus rows of ``b`` not in ``a`` (multiset difference)."""
    cols = ", ".join(columns)
    w = f" WHERE {where}" if where else ""
    with _admin(url) as conn:
        row = conn.execute(
            f"SELECT (SELECT count(*) FROM (SELECT {cols} FROM {a}{w} EXCEPT ALL "
            f"SELECT {cols} FROM {b}{w}) x) + (SELECT count(*) FROM (SELECT {cols} FROM {b}{w} "
            f"EXCEPT ALL SELECT {cols} FROM {a}{w}) y)"
        ).fetchone()
    return int(row[0])


def _count(url: str, table: str, where: str = "") -> int:
    with _admin(url) as conn:
        return int(
            conn.execute(
                f"SELECT count(*) FROM {table}{' WHERE ' + where if where else ''}"
            ).fetchone()[0]
        )


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise BenchError(what)


def run_bench(
    server_url: str,
    *,
    rows: int,
    repeat: int,
    limits_only: bool = False,
    rss_factor: int = 5,
    profile_dir: str | None = None,
    log: Callable[[str], None] = _log,
) -> dict[str, Any]:
    """Run every measurement on ``server_url``; return the figures (see :func:`main`)."""
    started = time.perf_counter()
    tag = uuid.uuid4().hex[:8]
    names = {"src": f"bench_{tag}_src", "tgt": f"bench_{tag}_tgt"}
    with _admin(server_url) as conn:
        for n in names.values():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(n)))
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
        checkpoints = _may_checkpoint(conn)
    if not checkpoints:
        log("this role may not CHECKPOINT (not superuser, not pg_checkpoint): VACUUM alone settles")
    src_url, tgt_url = _db_url(server_url, names["src"]), _db_url(server_url, names["tgt"])
    m: dict[str, Measured] = {}

    def sample(key: str, seconds: float, detail: dict[str, Any] | None = None) -> None:
        m.setdefault(key, Measured()).samples.append(seconds)
        m[key].details.append(detail or {})

    def engine(mode: str, table: str, source_url: str, query: str, label: str) -> dict[str, Any]:
        spec = {
            "mode": mode,
            "table": table,
            "source_url": source_url,
            "target_url": tgt_url,
            "query": query,
        }
        if profile_dir:
            spec["profile"] = str(Path(profile_dir) / f"{label}.prof")
        return run_engine(spec)

    def same_db_rounds(
        mode: str,
        table: str,
        limit: str,
        *,
        create_limit: Callable[[psycopg.Connection[Any], str], None],
        hand: Callable[[str, str], _limits.LimitTiming],
        hand_label: str,
        engine_label: str,
        rounds_before: int,
    ) -> int:
        """The initial load and the 10%-changed re-syncs of a same-DB ``mode`` (source
        public.items in the target database): the hand-written SQL into ``bench.limit``,
        then the engine into ``bench.table``. Returns the rows the last change round
        changed; the change rounds are numbered on after ``rounds_before``."""
        key = table.removeprefix("items_")
        changed = 0
        for phase in ("initial", "changed"):
            for i in range(repeat):
                if phase == "initial":
                    with _admin(tgt_url) as conn:
                        create_limit(conn, limit)
                    _settle(tgt_url)
                else:
                    with _admin(tgt_url) as conn:
                        changed = change_ten_percent(conn, rounds_before + i + 1)
                    _settle(tgt_url, f"bench.{limit}", f"bench.{table}")
                t = hand(tgt_url, limit)
                sample(f"{limit}_{phase}", t.seconds, {"phases": dict(t.phases)})
                log(f"{hand_label} {phase} {i + 1}/{repeat}: {t.seconds:.2f}s {_fmt(t.phases)}")
                if limits_only:
                    continue
                if phase == "initial":
                    _drop(tgt_url, f"bench.{table}")
                    _settle(tgt_url)
                else:
                    _settle(tgt_url, f"bench.{table}")
                r = engine(mode, table, tgt_url, SOURCE_QUERY, f"{key}_{phase}_{i}")
                sample(f"{key}_{phase}", r["seconds"], r)
                log(f"{engine_label} {phase} {i + 1}/{repeat}: {r['seconds']:.2f}s")
        return changed

    changed_rows = 0
    try:
        log(f"generating {rows:,} rows in the source and target databases")
        with _admin(src_url) as conn:
            create_items(conn, rows)
        with _admin(tgt_url) as conn:
            create_items(conn, rows)
            conn.execute("CREATE SCHEMA bench")

        # (a) + (b) cross-DB merge, initial load
        for i in range(repeat):
            with _admin(tgt_url) as conn:
                _limits.create_limit_merge_target(conn, "limit_merge")
            _settle(tgt_url)
            t = _limits.copy_merge(src_url, tgt_url, "limit_merge")
            sample("limit_merge_initial", t.seconds, {"phases": dict(t.phases)})
            log(f"limit merge initial {i + 1}/{repeat}: {t.seconds:.2f}s {_fmt(t.phases)}")
            if limits_only:
                continue
            _drop(tgt_url, "bench.items_merge")
            _settle(tgt_url)
            r = engine("merge", "items_merge", src_url, SOURCE_QUERY, f"merge_initial_{i}")
            sample("merge_initial", r["seconds"], r)
            log(f"engine merge initial {i + 1}/{repeat}: {r['seconds']:.2f}s")
            _check(
                _count(tgt_url, "bench.items_merge") == rows,
                f"engine merge initial load holds {_count(tgt_url, 'bench.items_merge')} rows, "
                f"expected {rows}",
            )

        # cross-DB merge, re-sync with 10% of the rows changed
        for i in range(repeat):
            with _admin(src_url) as conn:
                changed_rows = change_ten_percent(conn, i + 1)
            _settle(tgt_url, "bench.limit_merge", "bench.items_merge")
            t = _limits.copy_merge(src_url, tgt_url, "limit_merge")
            _check(
                t.rows_written == changed_rows,
                f"hand-written upsert wrote {t.rows_written} rows, expected {changed_rows}",
            )
            sample("limit_merge_resync", t.seconds, {"phases": dict(t.phases)})
            log(f"limit merge re-sync {i + 1}/{repeat}: {t.seconds:.2f}s {_fmt(t.phases)}")
            if limits_only:
                continue
            _settle(tgt_url, "bench.items_merge")
            r = engine("merge", "items_merge", src_url, SOURCE_QUERY, f"merge_resync_{i}")
            sample("merge_resync", r["seconds"], r)
            log(f"engine merge re-sync {i + 1}/{repeat}: {r['seconds']:.2f}s")
        if not limits_only:
            diff = _differences(tgt_url, "bench.items_merge", "bench.limit_merge", COLUMNS)
            _check(
                diff == 0, f"engine merge target differs from the hand-written one by {diff} rows"
            )

        # (c) same-DB scd2 (source public.items in the target database)
        same_db_rounds(
            "scd2",
            "items_scd2",
            "limit_scd2",
            create_limit=_limits.create_limit_scd2_target,
            hand=_limits.hand_scd2,
            hand_label="hand scd2",
            engine_label="engine scd2",
            rounds_before=0,
        )
        if not limits_only:
            cols = [*COLUMNS, "is_current"]
            diff = _differences(tgt_url, "bench.items_scd2", "bench.limit_scd2", cols)
            _check(
                diff == 0, f"engine scd2 history differs from the hand-written one by {diff} rows"
            )
            current = _count(tgt_url, "bench.items_scd2", "is_current")
            _check(current == rows, f"engine scd2 has {current} current rows, expected {rows}")

        # (c') same-DB merge (source public.items in the target database); the re-syncs
        # use change rounds after scd2's, so each changes 10% against the caught-up target
        changed_rows = same_db_rounds(
            "merge",
            "items_merge_same",
            "limit_merge_same",
            create_limit=_limits.create_limit_merge_target,
            hand=_limits.hand_merge,
            hand_label="bare upsert",
            engine_label="engine same-DB merge",
            rounds_before=repeat,
        )
        if not limits_only:
            diff = _differences(
                tgt_url, "bench.items_merge_same", "bench.limit_merge_same", COLUMNS
            )
            _check(
                diff == 0,
                f"engine same-DB merge target differs from the bare upsert's by {diff} rows",
            )

        # (e) the row hash alone: the canonical hash against the previous md5(ROW(…))
        for stage, key in ((False, "hash_same"), (True, "hash_stage")):
            for _ in range(repeat):
                old, new = _limits.hash_cost(tgt_url, stage=stage)
                sample(f"limit_{key}", old)
                sample(key, new)
                log(f"row hash over {key}: previous {old:.2f}s, canonical {new:.2f}s")

        # (d) peak RSS of a cross-DB merge at N and at 5N (a generated source query)
        if not limits_only:
            for label, n in (("n", rows), ("5n", rss_factor * rows)):
                r = engine("merge", f"rss_{label}", src_url, generated_query(n), f"rss_{label}")
                sample(f"rss_{label}", r["rss_peak_kib"] / 1024.0, r)
                log(
                    f"engine merge of {n:,} rows: {r['seconds']:.2f}s, "
                    f"peak RSS {r['rss_peak_kib'] / 1024:.1f} MiB"
                )
                _check(
                    _count(tgt_url, f"bench.rss_{label}") == n,
                    f"engine merge of a generated source did not load {n} rows",
                )
                _drop(tgt_url, f"bench.rss_{label}")
    finally:
        for n in names.values():
            _drop_database(server_url, n)

    return {
        "rows": rows,
        "repeat": repeat,
        "changed_rows": changed_rows,
        "server_version": pg_version,
        "checkpoints": checkpoints,
        "cpus": os.cpu_count(),
        "elapsed_s": time.perf_counter() - started,
        "measurements": {
            k: {"median": v.median, "samples": v.samples, "details": v.details}
            for k, v in m.items()
        },
        "comparisons": _comparisons(m, rows, rss_factor),
    }


def _comparisons(m: dict[str, Measured], rows: int, factor: int) -> list[dict[str, Any]]:
    """One row per target of the issue: ours, its limit, ratio, target, met."""
    pipe, hand = "COPY pipe + upsert", "hand-written SQL"
    spec = [
        (
            "cross-DB merge, initial",
            "merge_initial",
            "limit_merge_initial",
            pipe,
            "merge_initial",
            "s",
        ),
        (
            "cross-DB merge, 10% re-sync",
            "merge_resync",
            "limit_merge_resync",
            pipe,
            "merge_resync",
            "s",
        ),
        ("same-DB scd2, initial", "scd2_initial", "limit_scd2_initial", hand, "scd2", "s"),
        ("same-DB scd2, 10% changed", "scd2_changed", "limit_scd2_changed", hand, "scd2", "s"),
        (
            "same-DB merge, initial",
            "merge_same_initial",
            "limit_merge_same_initial",
            "bare upsert",
            "merge_same",
            "s",
        ),
        (
            "same-DB merge, 10% changed",
            "merge_same_changed",
            "limit_merge_same_changed",
            "bare upsert",
            "merge_same",
            "s",
        ),
        (f"peak RSS, merge of {factor}N", "rss_5n", "rss_n", f"at N = {rows:,}", "rss", "MiB"),
        ("row hash, source table", "hash_same", "limit_hash_same", "md5(ROW(…))", "hash", "s"),
        ("row hash, cross-DB stage", "hash_stage", "limit_hash_stage", "md5(ROW(…))", "hash", "s"),
    ]
    out = []
    for label, ours, limit, limit_label, target, unit in spec:
        if limit not in m:
            continue
        row: dict[str, Any] = {
            "measurement": label,
            "unit": unit,
            "limit_label": limit_label,
            "limit": m[limit].median,
            "target": TARGETS[target],
        }
        if ours in m:
            row["ours"] = m[ours].median
            row["ratio"] = m[ours].median / m[limit].median
            if TARGETS[target] is not None:
                row["met"] = row["ratio"] <= TARGETS[target]
        out.append(row)
    return out


def format_table(report: dict[str, Any]) -> str:
    head = ("measurement", "ours", "limit", "vs", "ratio", "target", "met")
    lines = [head]
    for c in report["comparisons"]:
        u = c["unit"]
        ours = f"{c['ours']:.2f} {u}" if "ours" in c else "-"
        ratio = f"{c['ratio']:.2f}×" if "ratio" in c else "-"
        met = ("yes" if c["met"] else "NO") if "met" in c else "-"
        lines.append(
            (
                c["measurement"],
                ours,
                f"{c['limit']:.2f} {u}",
                c["limit_label"],
                ratio,
                f"≤ {c['target']:.2f}×" if c["target"] is not None else "report",
                met,
            )
        )
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    text = [
        " | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in lines
    ]
    text.insert(1, "-+-".join("-" * w for w in widths))
    ms = report["measurements"]
    phases = []
    for key in (
        "limit_merge_initial",
        "limit_merge_resync",
        "limit_scd2_initial",
        "limit_scd2_changed",
    ):
        if key in ms:
            split = [d.get("phases", {}) for d in ms[key]["details"]]
            avg = {p: statistics.median(s[p] for s in split) for p in split[0]}
            phases.append(f"{key}: " + ", ".join(f"{p} {v:.2f} s" for p, v in avg.items()))
    for key in (
        "merge_initial",
        "merge_resync",
        "scd2_initial",
        "scd2_changed",
        "merge_same_initial",
        "merge_same_changed",
    ):
        if key in ms:
            runs = [d.get("steps", []) for d in ms[key]["details"]]
            labels = [label for label, _ in runs[0]]
            med = {
                label: statistics.median(dict(r).get(label, 0.0) for r in runs) for label in labels
            }
            slow = [(lb, v) for lb, v in med.items() if v >= 0.05]
            shown = ", ".join(f"{lb} {v:.2f} s" for lb, v in slow) or "every step < 0.05 s"
            phases.append(f"engine {key}: {shown}")
    footer = [
        "",
        f"N = {report['rows']:,} rows; medians of {report['repeat']} runs; "
        f"{report['changed_rows']:,} rows changed per re-sync; PostgreSQL "
        f"{report['server_version']}; {report['cpus']} CPUs; bench took "
        f"{report['elapsed_s']:.0f} s."
        + ("" if report.get("checkpoints", True) else " Settled without CHECKPOINT (not allowed)."),
        "phases (median; engine steps of 0.05 s or more):",
        *(f"  {p}" for p in phases),
    ]
    return "\n".join(text + footer)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="N (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--server-url", help="use this PostgreSQL server (needs CREATEDB)")
    parser.add_argument("--json", dest="json_path", help="also write the figures here")
    parser.add_argument("--limits-only", action="store_true", help="measure only the limits")
    parser.add_argument("--profile-dir", help="write a cProfile dump of each engine run here")
    parser.add_argument("--rss-factor", type=int, default=5, help="the 5 of 5N")
    args = parser.parse_args(argv)
    rows = args.rows or (20_000 if args.quick else 1_000_000)
    repeat = args.repeat or (1 if args.quick else 3)
    if args.profile_dir:
        Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
    server = None
    server_url = args.server_url
    if server_url is None:
        from ematix_flow._embedded import start_embedded

        server = start_embedded(tempfile.mkdtemp(prefix="efbench"))
        server_url = server.uri
    try:
        report = run_bench(
            server_url,
            rows=rows,
            repeat=repeat,
            limits_only=args.limits_only,
            rss_factor=args.rss_factor,
            profile_dir=args.profile_dir,
        )
    finally:
        if server is not None:
            server.stop()
    print(format_table(report))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2, default=str))
    return report


def cli(argv: Sequence[str] | None = None) -> int:
    """Exit code: 0 when every target was met, 1 otherwise."""
    report = main(argv)
    return 0 if all(c.get("met", True) for c in report["comparisons"]) else 1


if __name__ == "__main__":
    sys.exit(cli())
