"""The benchmark: our engine against the physical limit, measured in the same run.

Usage (from the repository root)::

    python -m bench                   # N = 1,000,000, 3 repetitions, ~10 min on 2 cores
    python -m bench --rows 200000
    python -m bench --quick           # a small smoke run (N = 20,000, 1 repetition)
    python -m bench --json out.json   # also write every figure as JSON

It starts an embedded PostgreSQL (``--server-url`` uses an existing server instead;
its role needs CREATEDB), creates a source and a target database, generates N rows of
a 6-column table in SQL in both, and measures, as medians of ``--repeat`` runs, each
next to its yardsticks (:mod:`bench._limits`):

(a) our cross-DB ``merge`` (``pipeline.sync``): the initial load against a bare binary
    COPY into an empty table with the same key (and against the COPY pipe + upsert), a
    re-sync with 10% of the rows changed against the COPY pipe into a temp stage plus
    one ``INSERT … ON CONFLICT … WHERE … IS DISTINCT FROM``;
(b) our same-DB ``scd2``, initial and 10%-changed, against hand-written SCD2 (md5 row
    hash; UPDATE close + INSERT new; a partial unique index as the table's only index),
    the same with the engine's ``(id, valid_from)`` primary key added, and (initial) a
    bare ``INSERT … SELECT`` into a table built by the engine's own DDL;
(c) our same-DB ``merge``: initial against a bare ``INSERT … SELECT`` into an empty
    table (and the bare upsert), 10%-changed against the bare
    ``INSERT … SELECT … ON CONFLICT … WHERE … IS DISTINCT FROM``;
(d) fan-out: one declarative pipeline, a cross-DB source and three targets (merge,
    scd2, append with ``incremental_column``), initial and 10% re-sync, against the
    three targets as three single-target pipelines (their sum, and the merge one alone):
    once with the items table as the source, once with a feature view — an aggregate
    query over N events (``public.events``) giving N / 10 entity rows, 10% of the
    entities' events changed per re-sync;
(e) our process's peak RSS (``VmHWM``) for a cross-DB merge at N and at 5N rows;
(f) the row hash alone, the canonical one against the previous ``md5(ROW(…))``.

Between measurements the tables are vacuumed and a CHECKPOINT is forced, so that no
run pays for an earlier one's writes. CHECKPOINT needs superuser or (PostgreSQL 15+)
membership in ``pg_checkpoint``; a role with neither settles by VACUUM alone, and the
report says so (``checkpoints: false``).

Each engine operation runs in a fresh subprocess (:mod:`bench._worker`), timed around
the pipeline's run alone. After the timed runs the engine's targets are checked against
the hand-written ones (and the fan-out's against the single-target runs') row for row,
so a fast but wrong engine cannot pass.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench import _limits
from bench._data import (
    COLUMNS,
    FEATURE_QUERY,
    SOURCE_QUERY,
    change_feature_ten_percent,
    change_ten_percent,
    create_events,
    create_items,
    generated_query,
)

__all__ = ["BenchError", "main", "run_bench"]

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The ratio each comparison must stay within (``None``: reported, no target).
TARGETS: dict[str, float | None] = {
    "initial_load": 1.1,  # a first load against the bare load into an empty table
    "merge_resync": 1.1,
    "scd2": 1.2,  # against hand-written SCD2
    "merge_same": 1.25,
    # fan-out of 3 against one single-target run, re-sync, of the feature view (the
    # plain-table fan-out is reported: see bench/README.md)
    "fan_out": 1.6,
    "rss": 1.1,
    "report": None,
}
#: The fan-out scenario's targets: (mode, incremental_column).
FAN_OUT = (("merge", None), ("scd2", None), ("append", "updated_at"))


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


@dataclass(frozen=True)
class Yardstick:
    """One hand-written yardstick of a same-DB round (see :func:`run_bench`)."""

    #: ``bench.<table>``; its samples are ``<table>_<phase>``.
    table: str
    label: str
    run: Callable[[str, str], _limits.LimitTiming]
    #: Builds the empty table before each initial load; ``None``: ``run`` creates it.
    create: Callable[[psycopg.Connection[Any], str], None] | None = None
    #: Measured on the initial load only (a load into an empty table).
    initial_only: bool = False


def run_engine(spec: dict[str, Any]) -> dict[str, Any]:
    """One pipeline run in a fresh Python process (see :mod:`bench._worker`)."""
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
        what = (
            f"pipeline {spec['pipeline']}"
            if "targets" in spec
            else f"{spec['mode']} into bench.{spec['table']}"
        )
        raise BenchError(
            f"engine run ({what}) failed with exit code "
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

    def fan_out_run(
        pipeline: str, targets: Sequence[tuple[str, str, str | None]], query: str
    ) -> Any:
        """One declarative pipeline from the cross-DB source ``query`` into ``targets``
        ((table, mode, incremental_column)); the worker's report."""
        spec: dict[str, Any] = {
            "pipeline": pipeline,
            "targets": [
                {"table": t, "mode": mode, "incremental_column": inc} for t, mode, inc in targets
            ],
            "source_url": src_url,
            "target_url": tgt_url,
            "query": query,
        }
        if profile_dir:
            spec["profile"] = str(Path(profile_dir) / f"{pipeline}_{len(m)}.prof")
        return run_engine(spec)

    def same_db_rounds(
        mode: str,
        table: str,
        yardsticks: Sequence[Yardstick],
        *,
        engine_label: str,
        rounds_before: int,
    ) -> int:
        """The initial load and the 10%-changed re-syncs of a same-DB ``mode`` (source
        public.items in the target database): each yardstick into its own table, then
        the engine into ``bench.table``. Returns the rows the last change round
        changed; the change rounds are numbered on after ``rounds_before``."""
        key = table.removeprefix("items_")
        changed = 0
        for phase in ("initial", "changed"):
            for i in range(repeat):
                if phase == "initial":
                    with _admin(tgt_url) as conn:
                        for y in yardsticks:
                            if y.create is not None:
                                y.create(conn, y.table)
                            else:
                                conn.execute(f"DROP TABLE IF EXISTS bench.{y.table}")
                else:
                    with _admin(tgt_url) as conn:
                        changed = change_ten_percent(conn, rounds_before + i + 1)
                for y in yardsticks:
                    if phase == "changed" and y.initial_only:
                        continue
                    _settle(tgt_url, *([f"bench.{y.table}"] if phase == "changed" else []))
                    t = y.run(tgt_url, y.table)
                    if phase == "initial":
                        _check(
                            _count(tgt_url, f"bench.{y.table}") == rows,
                            f"{y.label} initial load wrote {_count(tgt_url, f'bench.{y.table}')} "
                            f"rows, expected {rows}",
                        )
                    sample(f"{y.table}_{phase}", t.seconds, {"phases": dict(t.phases)})
                    log(f"{y.label} {phase} {i + 1}/{repeat}: {t.seconds:.2f}s {_fmt(t.phases)}")
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

        # (a) cross-DB merge, initial load: COPY pipe + upsert, bare COPY, engine
        for i in range(repeat):
            with _admin(tgt_url) as conn:
                _limits.create_limit_merge_target(conn, "limit_merge")
            _settle(tgt_url)
            t = _limits.copy_merge(src_url, tgt_url, "limit_merge")
            sample("limit_merge_initial", t.seconds, {"phases": dict(t.phases)})
            log(f"limit merge initial {i + 1}/{repeat}: {t.seconds:.2f}s {_fmt(t.phases)}")
            _drop(tgt_url, "bench.limit_copy")
            _settle(tgt_url)
            t = _limits.bare_copy(src_url, tgt_url, "limit_copy")
            _check(
                t.rows_written == rows, f"bare COPY wrote {t.rows_written} rows, expected {rows}"
            )
            sample("limit_copy_initial", t.seconds, {"phases": dict(t.phases)})
            log(f"bare COPY initial {i + 1}/{repeat}: {t.seconds:.2f}s")
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
        if not limits_only:
            diff = _differences(tgt_url, "bench.items_merge", "bench.limit_copy", COLUMNS)
            _check(diff == 0, f"engine merge initial load differs from the source by {diff} rows")
        _drop(tgt_url, "bench.limit_copy")

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

        # (d) fan-out: one pipeline, three targets, against three single-target pipelines;
        # the change rounds of the source database go on after the merge re-syncs'
        if not limits_only:
            changed_rows = _fan_out_rounds(
                src_url, tgt_url, rows, repeat, run=fan_out_run, sample=sample, log=log
            )
            # (d') the same over a feature view: an aggregate query over N events
            with _admin(src_url) as conn:
                entities = create_events(conn, rows)
            _fan_out_rounds(
                src_url,
                tgt_url,
                entities,
                repeat,
                run=fan_out_run,
                sample=sample,
                log=log,
                scenario=FEATURE_SCENARIO,
            )

        # (b) same-DB scd2 (source public.items in the target database)
        _drop(tgt_url, "bench.limit_scd2_bare")
        scd2_ddl = _limits.engine_ddl(tgt_url, "limit_scd2_bare", "scd2")
        same_db_rounds(
            "scd2",
            "items_scd2",
            [
                Yardstick("limit_scd2", "hand scd2", _limits.hand_scd2, _hand_scd2_table()),
                Yardstick(
                    "limit_scd2_pk",
                    "hand scd2 + PK",
                    _limits.hand_scd2,
                    _hand_scd2_table(primary_key=True),
                ),
                Yardstick(
                    "limit_scd2_bare",
                    "bare scd2 insert",
                    lambda url, table: _limits.bare_insert_scd2(url, table, scd2_ddl),
                    initial_only=True,
                ),
            ],
            engine_label="engine scd2",
            rounds_before=0,
        )
        if not limits_only:
            # the first load's versions (the earliest valid_from) against the bare insert:
            # the yardstick fills the framework columns as the engine does
            first = (
                "(SELECT * FROM bench.items_scd2 WHERE valid_from = "
                "(SELECT min(valid_from) FROM bench.items_scd2)) AS e"
            )
            bare = [*COLUMNS, "row_hash"]
            diff = _differences(tgt_url, first, "bench.limit_scd2_bare", bare)
            _check(
                diff == 0,
                f"engine scd2 first load differs from the bare insert (row hash included) by "
                f"{diff} rows: the yardstick no longer fills the table as the engine does",
            )
            cols = [*COLUMNS, "is_current"]
            diff = _differences(tgt_url, "bench.items_scd2", "bench.limit_scd2", cols)
            _check(
                diff == 0, f"engine scd2 history differs from the hand-written one by {diff} rows"
            )
            current = _count(tgt_url, "bench.items_scd2", "is_current")
            _check(current == rows, f"engine scd2 has {current} current rows, expected {rows}")
        pk_rows = _count(tgt_url, "bench.limit_scd2_pk")
        _check(
            pk_rows == _count(tgt_url, "bench.limit_scd2"),
            f"hand scd2 with the primary key holds {pk_rows} rows, the one without "
            f"{_count(tgt_url, 'bench.limit_scd2')}",
        )
        _drop(tgt_url, "bench.limit_scd2_bare", "bench.limit_scd2_pk")

        # (c) same-DB merge (source public.items in the target database); the re-syncs
        # use change rounds after scd2's, so each changes 10% against the caught-up target
        changed_same = same_db_rounds(
            "merge",
            "items_merge_same",
            [
                Yardstick(
                    "limit_merge_same",
                    "bare upsert",
                    _limits.hand_merge,
                    _limits.create_limit_merge_target,
                ),
                Yardstick(
                    "limit_insert_same", "bare insert", _limits.bare_insert, initial_only=True
                ),
            ],
            engine_label="engine same-DB merge",
            rounds_before=repeat,
        )
        changed_rows = changed_same
        if not limits_only:
            diff = _differences(
                tgt_url, "bench.items_merge_same", "bench.limit_merge_same", COLUMNS
            )
            _check(
                diff == 0,
                f"engine same-DB merge target differs from the bare upsert's by {diff} rows",
            )

        # (f) the row hash alone: the canonical hash against the previous md5(ROW(…))
        for stage, key in ((False, "hash_same"), (True, "hash_stage")):
            for _ in range(repeat):
                old, new = _limits.hash_cost(tgt_url, stage=stage)
                sample(f"limit_{key}", old)
                sample(key, new)
                log(f"row hash over {key}: previous {old:.2f}s, canonical {new:.2f}s")

        # (e) peak RSS of a cross-DB merge at N and at 5N (a generated source query)
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


def _hand_scd2_table(
    *, primary_key: bool = False
) -> Callable[[psycopg.Connection[Any], str], None]:
    def create(conn: psycopg.Connection[Any], table: str) -> None:
        _limits.create_limit_scd2_target(conn, table, primary_key=primary_key)

    return create


@dataclass(frozen=True)
class FanOutScenario:
    """One fan-out scenario: its source query, how 10% of it changes, and the prefix
    of its tables, pipelines and measurement keys."""

    query: str
    change: Callable[[psycopg.Connection[Any], int], int]
    prefix: str  # table and pipeline names: <prefix>one_<mode>, <prefix>fan_<mode>
    key: str  # measurements: <key>_<phase>, single_<mode>_<phase>… with key's prefix


PLAIN_SCENARIO = FanOutScenario(SOURCE_QUERY, change_ten_percent, "", "fan_out")
FEATURE_SCENARIO = FanOutScenario(
    FEATURE_QUERY, change_feature_ten_percent, "feat_", "feature_fan_out"
)


def _fan_out_rounds(
    src_url: str,
    tgt_url: str,
    rows: int,
    repeat: int,
    *,
    run: Callable[[str, Sequence[tuple[str, str, str | None]], str], dict[str, Any]],
    sample: Callable[[str, float, dict[str, Any] | None], None],
    log: Callable[[str], None],
    scenario: FanOutScenario = PLAIN_SCENARIO,
) -> int:
    """The fan-out scenario (see :func:`run_bench`): per repetition the three targets as
    three single-target pipelines (``one_<mode>``) and as one pipeline with three
    targets (``fan_<mode>``), the order alternating; initial loads into dropped tables
    (their watermarks cleared), then re-syncs after 10% changes of the source (change
    rounds ``repeat + 1`` on). ``rows``: the rows the source query returns. Returns the
    rows the last change round changed."""
    p = scenario.prefix
    one = {mode: (f"{p}one_{mode}", mode, inc) for mode, inc in FAN_OUT}
    fan = [(f"{p}fan_{mode}", mode, inc) for mode, inc in FAN_OUT]
    tables = [f"bench.{t}" for t, _, _ in [*one.values(), *fan]]
    pipelines = [f"bench_{t}" for t, _, _ in one.values()] + [f"bench_{p}fan_out"]
    single, sum_key = f"{p}single_", f"{p}singles"
    changed = 0
    for phase in ("initial", "resync"):
        for i in range(repeat):
            if phase == "initial":
                _drop(tgt_url, *tables)
                _clear_watermarks(tgt_url, pipelines)
            else:
                with _admin(src_url) as conn:
                    changed = scenario.change(conn, repeat + i + 1)
            singles: dict[str, dict[str, Any]] = {}
            # the order alternates, so neither side always runs on the other's heels
            for side in ("singles", "fan") if i % 2 == 0 else ("fan", "singles"):
                if side == "singles":
                    for mode, target in one.items():
                        _settle(tgt_url, *([f"bench.{target[0]}"] if phase == "resync" else []))
                        singles[mode] = run(f"bench_{target[0]}", [target], scenario.query)
                        log(
                            f"{p}single-target {mode} {phase} {i + 1}/{repeat}: "
                            f"{singles[mode]['seconds']:.2f}s"
                        )
                else:
                    _settle(tgt_url, *(tables[3:] if phase == "resync" else []))
                    r = run(f"bench_{p}fan_out", fan, scenario.query)
                    sample(f"{scenario.key}_{phase}", r["seconds"], r)
                    log(f"{p}fan-out of 3 {phase} {i + 1}/{repeat}: {r['seconds']:.2f}s")
                    _check_fan_out(r, phase, rows, changed)
            for mode, r in singles.items():
                sample(f"{single}{mode}_{phase}", r["seconds"], r)
                _check_fan_out(r, phase, rows, changed)
            sample(
                f"{sum_key}_{phase}",
                sum(r["seconds"] for r in singles.values()),
                {mode: r["seconds"] for mode, r in singles.items()},
            )
    for mode, _ in FAN_OUT:
        cols = [*COLUMNS, "is_current"] if mode == "scd2" else list(COLUMNS)
        diff = _differences(tgt_url, f"bench.{p}fan_{mode}", f"bench.{p}one_{mode}", cols)
        _check(
            diff == 0,
            f"the fan-out's {mode} target differs from the single-target run's by {diff} rows",
        )
    _drop(tgt_url, *tables)
    return changed


def _clear_watermarks(url: str, pipelines: Sequence[str]) -> None:
    """Forget the watermarks of ``pipelines``, whose targets were just dropped."""
    from ematix_flow._engine.state import state_schema

    schema = state_schema()
    with _admin(url) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"{schema}.watermarks",)).fetchone()[0]:
            conn.execute(
                sql.SQL("DELETE FROM {}.watermarks WHERE pipeline = ANY(%s)").format(
                    sql.Identifier(schema)
                ),
                (list(pipelines),),
            )


def _check_fan_out(report: dict[str, Any], phase: str, rows: int, changed: int) -> None:
    """Each target of a fan-out (or single-target) run wrote what it had to: on the
    initial load every row; on a re-sync the changed rows (merge: updated, scd2: closed
    and new versions, append: the rows above the watermark)."""
    for t in report["targets"]:
        res = t["result"]
        mode = t["table"].rsplit("_", 1)[-1]
        if phase == "initial":
            got, want = res["rows_inserted"], rows
        elif mode == "append":
            got, want = res["rows_inserted"], changed
        else:
            got, want = res["rows_updated"], changed
        _check(got == want, f"{t['table']} {phase}: the engine wrote {got} rows, expected {want}")


_INSERT_SELECT = "bare INSERT … SELECT"
#: The printed comparisons: (measurement, ours, its yardsticks, unit); a yardstick is
#: (key, label, target). Each ratio is ours over a yardstick measured in the same run,
#: next to it; the first yardstick of a measurement is the one its target is about.
_COMPARISONS: tuple[tuple[str, str, tuple[tuple[str, str, str], ...], str], ...] = (
    (
        "cross-DB merge, initial",
        "merge_initial",
        (
            ("limit_copy_initial", "bare COPY", "initial_load"),
            ("limit_merge_initial", "COPY pipe + upsert", "report"),
        ),
        "s",
    ),
    (
        "cross-DB merge, 10% re-sync",
        "merge_resync",
        (("limit_merge_resync", "COPY pipe + upsert", "merge_resync"),),
        "s",
    ),
    (
        "same-DB scd2, initial",
        "scd2_initial",
        (
            ("limit_scd2_initial", "hand-written SCD2", "scd2"),
            ("limit_scd2_bare_initial", _INSERT_SELECT, "initial_load"),
            ("limit_scd2_pk_initial", "hand SCD2 + PK", "report"),
        ),
        "s",
    ),
    (
        "same-DB scd2, 10% changed",
        "scd2_changed",
        (
            ("limit_scd2_changed", "hand-written SCD2", "scd2"),
            ("limit_scd2_pk_changed", "hand SCD2 + PK", "report"),
        ),
        "s",
    ),
    (
        "same-DB merge, initial",
        "merge_same_initial",
        (
            ("limit_insert_same_initial", _INSERT_SELECT, "initial_load"),
            ("limit_merge_same_initial", "bare upsert", "report"),
        ),
        "s",
    ),
    (
        "same-DB merge, 10% changed",
        "merge_same_changed",
        (("limit_merge_same_changed", "bare upsert", "merge_same"),),
        "s",
    ),
    *(
        (
            f"{label}fan-out of 3, {phase_label}",
            f"{key}_{phase}",
            (
                (f"{p}single_merge_{phase}", "1 single-target run", gate),
                (f"{p}singles_{phase}", "3 single-target runs", "report"),
            ),
            "s",
        )
        for label, key, p, gated in (
            ("", "fan_out", "", False),
            ("feature view ", "feature_fan_out", "feat_", True),
        )
        for phase, phase_label, gate in (
            ("initial", "initial", "report"),
            ("resync", "10% re-sync", "fan_out" if gated else "report"),
        )
    ),
    ("peak RSS, merge of 5N", "rss_5n", (("rss_n", "at N", "rss"),), "MiB"),
    ("row hash, source table", "hash_same", (("limit_hash_same", "md5(ROW(…))", "report"),), "s"),
    (
        "row hash, cross-DB stage",
        "hash_stage",
        (("limit_hash_stage", "md5(ROW(…))", "report"),),
        "s",
    ),
)


def _comparisons(m: dict[str, Measured], rows: int, factor: int) -> list[dict[str, Any]]:
    """One row per comparison: ours, its yardstick, ratio, target, met."""
    out = []
    for label, ours, yardsticks, unit in _COMPARISONS:
        for limit, limit_label, target in yardsticks:
            if limit not in m:
                continue
            if ours == "rss_5n":
                label, limit_label = f"peak RSS, merge of {factor}N", f"at N = {rows:,}"
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


def _slow_steps(steps: list[list[Any]], runs: list[list[list[Any]]]) -> str:
    """The median of each step over ``runs`` (lists of [label, seconds]), those of
    0.05 s or more."""
    labels = [label for label, _ in steps]
    med = {label: statistics.median(dict(r).get(label, 0.0) for r in runs) for label in labels}
    slow = [(lb, v) for lb, v in med.items() if v >= 0.05]
    return ", ".join(f"{lb} {v:.2f} s" for lb, v in slow) or "every step < 0.05 s"


def format_table(report: dict[str, Any]) -> str:
    head = ("measurement", "ours", "yardstick", "vs", "ratio", "target", "met")
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
    for key, v in ms.items():
        split = [d.get("phases") for d in v["details"]]
        if key.startswith("limit_") and split and all(split) and len(split[0]) > 1:
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
            phases.append(f"engine {key}: {_slow_steps(runs[0], runs)}")
    for key in (
        "fan_out_initial",
        "fan_out_resync",
        "feature_fan_out_initial",
        "feature_fan_out_resync",
    ):
        if key in ms:
            details = ms[key]["details"]
            for n, t in enumerate(details[0]["targets"]):
                runs = [d["targets"][n]["steps"] for d in details]
                phases.append(f"engine {key}, {t['table']}: {_slow_steps(t['steps'], runs)}")
            reads = {(t.get("source_read") or ["not reported"])[0] for t in details[0]["targets"]}
            phases.append(f"  {key}: source read by {', '.join(sorted(reads))}")
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


@contextlib.contextmanager
def serve(server_url: str | None) -> Iterator[str]:
    """``server_url``, or that of an embedded PostgreSQL started (and stopped) here."""
    if server_url is not None:
        yield server_url
        return
    from ematix_flow._embedded import start_embedded

    server = start_embedded(tempfile.mkdtemp(prefix="efbench"))
    try:
        yield server.uri
    finally:
        server.stop()


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
    with serve(args.server_url) as server_url:
        report = run_bench(
            server_url,
            rows=rows,
            repeat=repeat,
            limits_only=args.limits_only,
            rss_factor=args.rss_factor,
            profile_dir=args.profile_dir,
        )
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
