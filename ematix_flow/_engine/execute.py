"""``execute(plan)``: run one target's plan in one transaction; the outcome as data.

Order inside the target transaction::

    pg_try_advisory_xact_lock(pipeline, target)   -- loser: a 'skipped' row, no data touched
    [run-due: slot already served by another run? -- a 'skipped' row, no data touched]
    set batch id / watermark (transaction-local settings)
    inspect target + describe source, rebuild the plan from those facts
    DDL (schema, table, additive drift, SCD2 index)
    [cross-DB: temp stage + binary COPY pipe]
    data statement(s)                              -- in a savepoint, for diagnostics
    watermark, run_history row
    COMMIT  (dry_run: ROLLBACK)

The state schema is created before (its own short transaction, under an advisory
lock). A failed run is rolled back and then recorded as ``failed`` in its own
transaction; one stopped by Ctrl-C (``KeyboardInterrupt``) likewise as ``interrupted``,
and the interrupt is handed back in the result for the caller to raise again.
``execute`` does not raise for a failed run: the :class:`TargetResult` carries the error
(and the exception, for callers that re-raise).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from ematix_flow._engine import state
from ematix_flow._engine.copy import pipe
from ematix_flow._engine.explain import (
    driver_message,
    duplicates_error,
    duplicates_sql,
    explain,
    untranslatable,
)
from ematix_flow._engine.inspect import describe, describe_source, inspect_target
from ematix_flow._engine.plan import (
    LOADED_WATERMARK,
    Decision,
    Plan,
    Step,
    build_plan,
    copy_in_sql,
    copy_out_sql,
    stage_sql,
)
from ematix_flow._engine.sql_common import cast_type, render
from ematix_flow._engine.sql_load import load_copy_in_sql, load_copy_out_sql
from ematix_flow._errors import EmatixFlowError, SourceError, SyncError
from ematix_flow._session import Timeouts

__all__ = ["StepResult", "TargetResult", "execute"]


@dataclass(frozen=True)
class StepResult:
    label: str
    kind: str
    rows: dict[str, Any] | int | None
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind,
            "rows": self.rows,
            "duration_s": round(self.duration_s, 6),
        }


@dataclass
class TargetResult:
    """The outcome of one target: counts, path, batch id, per-step rows, error."""

    pipeline: str
    target: str
    mode: str
    status: str  # succeeded | failed | skipped | not_run | planned | interrupted
    path: str | None = None
    batch_id: str | None = None
    duration_s: float = 0.0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    rows_unchanged: int = 0
    rows_expired: int = 0
    source_rows: int | None = None
    watermark_before: str | None = None
    watermark_after: str | None = None
    steps: tuple[StepResult, ...] = ()
    error: str | None = None
    #: The label of the step that raised, when the target failed while executing one.
    failed_step: str | None = None
    #: Why a load straight into a new table was rolled back for the staged plan.
    fallback: str | None = None
    dry_run: bool = False
    #: run | full_refresh | backfill (what the history row records)
    action: str = "run"
    #: A backfill step's window ``(lo, hi)``.
    window: tuple[str, str] | None = None
    plan: Plan | None = field(default=None, repr=False)
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    t0: float = field(default=0.0, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status in ("succeeded", "planned")

    def summary(self) -> dict[str, Any]:
        """The dict ``pipeline.sync`` returns."""
        return {
            "target": self.target,
            "status": self.status,
            "path": self.path,
            "rows_inserted": self.rows_inserted,
            "rows_updated": self.rows_updated,
            "rows_deleted": self.rows_deleted,
            "rows_unchanged": self.rows_unchanged,
            "rows_expired": self.rows_expired,
            "batch_id": self.batch_id,
            "duration_s": self.duration_s,
            "error": self.error,
        }

    def to_dict(self, *, stable: bool = False) -> dict[str, Any]:
        """JSON-ready; ``stable=True`` leaves out batch id and timings."""
        d: dict[str, Any] = {
            "pipeline": self.pipeline,
            "target": self.target,
            "mode": self.mode,
            "status": self.status,
            "dry_run": self.dry_run,
            "path": self.path,
            "rows_inserted": self.rows_inserted,
            "rows_updated": self.rows_updated,
            "rows_deleted": self.rows_deleted,
            "rows_unchanged": self.rows_unchanged,
            "rows_expired": self.rows_expired,
            "source_rows": self.source_rows,
            "watermark_before": self.watermark_before,
            "watermark_after": self.watermark_after,
            "error": self.error,
            "action": self.action,
            "window": list(self.window) if self.window else None,
            "steps": [s.to_dict() for s in self.steps],
            "plan": self.plan.to_dict() if self.plan is not None else None,
        }
        if stable:
            for s in d["steps"]:
                s.pop("duration_s")
        else:
            d["batch_id"] = self.batch_id
            d["duration_s"] = round(self.duration_s, 6)
        return d


#: How often a target transaction cancelled by a concurrent writer (serialization
#: failure, deadlock) is tried in all.
SERIALIZATION_ATTEMPTS = 3


def _retryable(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(
            cause, (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)
        ):
            return True
        cause = cause.__cause__
    return False


#: untranslatable character, invalid byte sequence, character not in repertoire
_ENCODING_ERRORS = ("22P05", "22021")


class _Skipped(Exception):
    pass


class _Superseded(Exception):
    pass


class _AlreadyRan(Exception):
    def __init__(self, slot: datetime, started: datetime) -> None:
        super().__init__(slot, started)
        self.slot = slot
        self.started = started


def execute(
    plan: Plan,
    *,
    dry_run: bool = False,
    on_step: Callable[[str], None] | None = None,
    due_slot: datetime | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> TargetResult:
    """Run ``plan`` (rebuilt from the databases' current facts) in one transaction.

    A plan that reads the run's shared stage (``plan.shared``) runs on the session
    holding that stage, which stays open for the run's other targets.

    ``due_slot`` (``flow run-due``): the schedule slot this run serves. Under the
    target's advisory lock, a non-skipped run of the same pipeline and target that
    started at or after it means the slot is served already (another ``run-due``
    decided "due" at the same time and committed first): the run is recorded as
    ``skipped`` and touches no data.

    ``on_step`` is called with each step's label before it runs; ``on_rows`` with the
    rows a cross-DB copy has streamed so far, about every half second.

    Example::

        result = execute(plan(options, source, conn, pipeline="p"))
        result.rows_inserted, result.status
    """
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    batch_id = str(uuid.uuid4())
    result = TargetResult(
        pipeline=plan.pipeline,
        target=plan.target,
        mode=plan.mode,
        status="failed",
        path=plan.path,
        batch_id=batch_id,
        dry_run=dry_run,
        action=plan.steer.action,
        window=plan.steer.window,
        plan=plan,
        watermark_before=plan.watermark_before,
        t0=t0,
    )
    schema = plan.state_schema
    where = f"Pipeline {plan.pipeline}, target {plan.target}"
    tconn: psycopg.Connection[Any] | None = None
    timeouts = plan.options.timeouts
    try:
        shared_session = plan.shared.session if plan.shared is not None else None
        tconn = shared_session or plan.target_conn_obj.open(autocommit=True, timeouts=timeouts)
        if not dry_run:
            state.ensure_state(tconn, schema)
        for attempt in range(1, SERIALIZATION_ATTEMPTS + 1):
            try:
                _run(
                    plan,
                    tconn,
                    result,
                    dry_run=dry_run,
                    batch_id=batch_id,
                    where=where,
                    on_step=on_step,
                    due_slot=due_slot,
                    on_rows=on_rows,
                )
                break
            except (EmatixFlowError, psycopg.Error) as exc:
                # Same-DB targets read one snapshot (REPEATABLE READ): a concurrent writer
                # to the target makes PostgreSQL cancel the transaction instead of letting
                # it overwrite a row it cannot see. Nothing was written: run it again.
                if attempt == SERIALIZATION_ATTEMPTS or not _retryable(exc):
                    raise
                result.steps = ()
                result.failed_step = None
                result.fallback = None
                time.sleep(0.05 * attempt)
        result.status = "succeeded"
    except _AlreadyRan as ran:
        result.status = "skipped"
        result.error = (
            f"already ran for slot {ran.slot.isoformat()}: a run of pipeline {plan.pipeline} "
            f"into target {plan.target} started at {ran.started.isoformat()}; this run did "
            "not touch it"
        )
    except _Superseded:
        result.status = "skipped"
        result.error = (
            f"a later run of pipeline {plan.pipeline} wrote target {plan.target} after this "
            "run read its source: this run did not touch it (it would have written an older "
            "state of the source)"
        )
    except _Skipped:
        result.status = "skipped"
        result.error = (
            f"another run of pipeline {plan.pipeline} is writing target {plan.target}; "
            "this run did not touch it"
        )
    except EmatixFlowError as exc:
        result.error = str(exc)
        result.exception = exc
    except psycopg.Error as exc:
        err = SyncError(f"{where}: {driver_message(exc)}")
        err.__cause__ = exc
        result.error = str(err)
        result.exception = err
    except KeyboardInterrupt as exc:
        # Ctrl-C: psycopg cancelled the statement, the transaction rolled back. Record
        # it (best effort) and hand the interrupt back: the caller stops the pipeline.
        result.status = "interrupted"
        result.error = f"interrupted: target {plan.target} rolled back, nothing committed"
        result.exception = exc
    if isinstance(result.exception, EmatixFlowError) and tconn is not None:
        waited = _waited(result.exception.__cause__, tconn, plan, timeouts, where, result)
        if waited is not None:
            result.error = str(waited)
            result.exception = waited
    if result.status == "interrupted" and not dry_run:
        _record_interrupted(tconn, plan, result, started)
    if result.status != "succeeded" and not dry_run:
        # rolled back: no work to report
        result.rows_inserted = result.rows_updated = result.rows_deleted = 0
        result.rows_unchanged = result.rows_expired = 0
    result.duration_s = time.perf_counter() - t0
    result.t0 = 0.0
    if tconn is not None:
        try:
            if result.status in ("failed", "skipped") and not dry_run and not tconn.closed:
                _record(tconn, schema, result, started)
        except psycopg.Error:
            pass  # the failure itself is what the caller needs to see
        finally:
            if tconn is not shared_session:
                tconn.close()
    return result


def _record_interrupted(
    tconn: psycopg.Connection[Any] | None, plan: Plan, result: TargetResult, started: datetime
) -> None:
    """An ``interrupted`` history row, on the run's session when it survived the
    interrupt, else on a new one. The interrupt may have come after the COMMIT (while
    the lock was released): then the run's own ``succeeded`` row is there, and the
    result says so instead."""
    schema = plan.state_schema
    sessions: list[Callable[[], contextlib.AbstractContextManager[Any]]] = []
    if tconn is not None and not tconn.closed and not tconn.broken:
        sessions.append(lambda: contextlib.nullcontext(tconn))
    sessions.append(lambda: plan.target_conn_obj.open(autocommit=True, connect_timeout=5))
    for session in sessions:
        try:
            with session() as conn:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    continue
                state.ensure_state(conn, schema)
                if state.batch_recorded(conn, schema, result.batch_id):
                    result.status = "succeeded"
                    result.error = None
                    return
                _record(conn, schema, result, started)
                return
        except (EmatixFlowError, psycopg.Error):
            continue


def _record(
    conn: psycopg.Connection[Any], schema: str, result: TargetResult, started: datetime
) -> None:
    with conn.transaction():
        conn.execute(state.record_run_sql(schema), _history_params(result, started))


def _history_params(result: TargetResult, started: datetime) -> dict[str, Any]:
    # Counts only for work that committed (the succeeded row is written with it).
    done = result.status in ("succeeded", "planned")
    return {
        "pipeline": result.pipeline,
        "target": result.target,
        "mode": result.mode,
        "status": result.status,
        "path": result.path,
        "batch_id": result.batch_id,
        "started_at": started,
        "finished_at": datetime.now(UTC),
        "duration_s": time.perf_counter() - result.t0 if result.t0 else result.duration_s,
        "rows_inserted": result.rows_inserted if done else None,
        "rows_updated": result.rows_updated if done else None,
        "rows_deleted": result.rows_deleted if done else None,
        "rows_unchanged": result.rows_unchanged if done else None,
        "rows_expired": result.rows_expired if done else None,
        "error": result.error,
        "action": result.action,
        "window_from": result.window[0] if result.window else None,
        "window_to": result.window[1] if result.window else None,
        "run_id": state.current_run_id(),
    }


def _run(
    plan: Plan,
    conn: psycopg.Connection[Any],
    result: TargetResult,
    *,
    dry_run: bool,
    batch_id: str,
    where: str,
    on_step: Callable[[str], None] | None,
    due_slot: datetime | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> None:
    options = plan.options
    started = datetime.now(UTC)
    steps: list[StepResult] = []
    sconn: psycopg.Connection[Any] | None = None
    lock = (state.LOCK_NAMESPACE, state.lock_key(plan.pipeline, plan.target))
    # The target's lock is taken before the transaction begins, so that the snapshot a
    # REPEATABLE READ transaction takes at its first statement already sees every run
    # that held the lock before. It is a session lock, released below or when the
    # session ends (a killed run's server process ends with its client).
    got = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", lock).fetchone()
    if not (got and got[0]):
        raise _Skipped
    # Same-DB: every statement of the plan reads the source, so they must all read one
    # snapshot of it (a key changed and deleted between the scd2 close and insert would
    # otherwise be left without a current version). Cross-DB statements read the stage,
    # which one COPY statement filled from one snapshot.
    conn.isolation_level = (
        psycopg.IsolationLevel.REPEATABLE_READ
        if plan.path == "same_db" and plan.shared is None
        else psycopg.IsolationLevel.READ_COMMITTED
    )
    try:
        with conn.transaction():
            if due_slot is not None and not dry_run:
                # Decided "due" before taking the lock; re-checked now that no other run
                # of this target can commit until we are done.
                ran = state.read_run_since(
                    conn, plan.state_schema, plan.pipeline, plan.target, due_slot
                )
                if ran is not None:
                    raise _AlreadyRan(due_slot, ran)
            conn.execute("SELECT set_config('ematix_flow.batch_id', %s, true)", (batch_id,))
            if dry_run:
                # A dry run leaves no trace, not even the state schema of a first run: it
                # is created here (savepoints) inside the transaction that is rolled back.
                state.ensure_state(conn, plan.state_schema)
            tfacts = inspect_target(
                conn,
                options.table,
                state_schema=plan.state_schema,
                pipeline=plan.pipeline,
                incremental=options.incremental_column is not None,
                count_rows=plan.steer.full_refresh,
            )
            if plan.path == "cross_db" and plan.shared is None:
                sconn = plan.source_conn_obj.open(autocommit=True, timeouts=options.timeouts)
                describe_conn = sconn
            else:
                describe_conn = conn
            try:
                if plan.shared is not None:
                    scols = describe_source(conn, plan.shared.select_sql(options.table))
                elif describe_conn is conn:
                    with conn.transaction():
                        scols = describe(conn, plan.source_obj, options.table)
                else:
                    scols = describe(describe_conn, plan.source_obj, options.table)
            except SourceError as exc:  # the SQL itself, its line quoted at the error
                raise SourceError(f"{where}: the source {plan.source} failed: {exc}") from exc
            except psycopg.Error as exc:
                raise SourceError(
                    f"{where}: the source {plan.source} failed: {driver_message(exc)}"
                ) from exc
            final = build_plan(
                options,
                plan.source_obj,
                plan.target_conn_obj,
                plan.source_conn_obj,
                pipeline=plan.pipeline,
                tfacts=tfacts,
                scols=scols,
                state_schema_name=plan.state_schema,
                steer=plan.steer,
                source_encoding=(describe_conn.info.parameter_status("server_encoding")),
                shared=plan.shared,
            )
            result.plan = final
            result.path = final.path
            result.watermark_before = final.watermark_before
            if final.problems:
                raise final.problems[0].error() if len(final.problems) == 1 else _joined(final)
            if plan.shared is not None:
                _check_shared_bound(conn, final, where)
                _check_shared_fresh(conn, final)
            if final.watermark_before is not None:
                # The canonical text of the watermark's type; both sessions are pinned,
                # so both read it back as the same value.
                conn.execute(
                    "SELECT set_config('ematix_flow.watermark', %s, true)",
                    (final.watermark_before,),
                )
                if sconn is not None:
                    sconn.execute(
                        "SELECT set_config('ematix_flow.watermark', %s, false)",
                        (final.watermark_before,),
                    )
            if final.steer.window is not None:
                hi = final.steer.window[1]
                conn.execute("SELECT set_config('ematix_flow.window_hi', %s, true)", (hi,))
                if sconn is not None:
                    sconn.execute("SELECT set_config('ematix_flow.window_hi', %s, false)", (hi,))
            if sconn is not None and any(s.kind == "load" for s in final.steps):
                # The load's SELECT runs in the source database for this transaction: it
                # reads the run time and the batch id from there.
                now = conn.execute("SELECT now()::text").fetchone()
                sconn.execute(
                    "SELECT set_config('ematix_flow.now', %s, false), "
                    "set_config('ematix_flow.batch_id', %s, false)",
                    (now[0] if now else None, batch_id),
                )
            counts: dict[str, Any] = {}
            run_steps = list(final.steps)
            steps_done: list[Step] = []
            while run_steps:
                step = run_steps.pop(0)
                if on_step is not None:
                    on_step(step.label)
                t = time.perf_counter()
                try:
                    if step.kind == "load":
                        # the load and the keys built after it: one savepoint
                        group = [step]
                        while run_steps and run_steps[0].kind == "load":
                            group.append(run_steps.pop(0))
                        done = _load(conn, sconn, final, group, counts, result, on_rows)
                        if done is None:
                            # rolled back: the staged plan runs in its place, and the
                            # report shows that plan
                            final = _fell_back(final, result.fallback or "")
                            result.plan = final
                            run_steps = [s for s in final.steps if s not in steps_done]
                            continue
                        steps.extend(done)
                        steps_done.extend(group)
                        continue
                    else:
                        rows = _step(
                            conn,
                            sconn,
                            final,
                            step,
                            counts,
                            result,
                            started,
                            where,
                            scols,
                            on_rows,
                        )
                except BaseException:
                    result.failed_step = step.label
                    raise
                steps.append(StepResult(step.label, step.kind, rows, time.perf_counter() - t))
                steps_done.append(step)
            result.steps = tuple(steps)
            if dry_run:
                raise psycopg.Rollback()
    finally:
        if sconn is not None:
            sconn.close()
        if not result.steps:
            result.steps = tuple(steps)
        conn.isolation_level = None
        if not conn.closed and not conn.broken:
            # on failure the session ends below, and its lock with it
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", lock)


def _fell_back(final: Plan, why: str) -> Plan:
    """The plan as it runs once its load straight into a new table was rolled back:
    the staged steps in place of the load and what followed it, and the ``load``
    decision saying why."""
    steps: list[Step] = []
    for s in final.steps:
        if s.kind == "load":
            if final.fallback_steps[0] not in steps:
                steps.extend(final.fallback_steps)
        elif s.label != LOADED_WATERMARK:
            steps.append(s)
    decisions = tuple(
        Decision(
            "load",
            "staged",
            f"the load straight into the new table failed ({why}) and was rolled back; "
            "the staged plan ran instead, to name what is wrong",
        )
        if d.topic == "load"
        else d
        for d in final.decisions
    )
    return replace(final, steps=tuple(steps), decisions=decisions, fallback_steps=())


def _load(
    conn: psycopg.Connection[Any],
    sconn: psycopg.Connection[Any] | None,
    plan: Plan,
    group: list[Step],
    counts: dict[str, Any],
    result: TargetResult,
    on_rows: Callable[[int], None] | None = None,
) -> list[StepResult] | None:
    """The load straight into a table this run created, then its keys and indexes, in
    one savepoint. ``None`` when it failed and was rolled back: the caller runs the
    staged steps instead, which either name what is wrong (a key twice, a value the
    column refuses) or do the work."""
    ctx = plan.context
    out: list[StepResult] = []
    try:
        with conn.transaction():
            for step in group:
                t = time.perf_counter()
                if step is not group[0]:
                    conn.execute(step.sql)
                    out.append(StepResult(step.label, step.kind, None, time.perf_counter() - t))
                    continue
                if sconn is not None:
                    n = pipe(
                        sconn,
                        conn,
                        render(load_copy_out_sql(ctx, plan.mode)),
                        render(load_copy_in_sql(ctx, plan.mode)),
                        on_rows=on_rows,
                    )
                else:
                    n = max(conn.execute(step.sql).rowcount, 0)
                rows = _apply({"inserted": n, "source_rows": n}, counts, result)
                out.append(StepResult(step.label, step.kind, rows, time.perf_counter() - t))
    except psycopg.Error as exc:
        if sconn is not None and sconn.info.transaction_status != TransactionStatus.IDLE:
            raise  # the source session is not reusable: report the load's own error
        result.fallback = driver_message(exc)
        return None
    return out


def _check_shared_bound(conn: psycopg.Connection[Any], final: Plan, where: str) -> None:
    """The shared stage holds the source rows from its lower bound on; a target that
    must read from further back (its watermark was reset lower after the stage was
    filled) cannot be served from it."""
    shared = final.shared
    if shared.lower is None or final.incremental_column is None:
        return
    needs = final.watermark_before
    ok = needs is not None and bool(
        conn.execute(
            sql.SQL("SELECT CAST(%s AS {t}) >= CAST(%s AS {t})").format(
                t=sql.SQL(shared.lower_type)
            ),
            (needs, shared.lower),
        ).fetchone()[0]
    )
    if not ok:
        raise SyncError(
            f"{where}: this run read the source once for all its targets, from "
            f"{shared.lower_column} >= {shared.lower!r} on, but this target's watermark "
            f"is now {needs!r} (its state changed while the run was starting: a reset?). "
            "Nothing was written; run the pipeline again."
        )


def _check_shared_fresh(conn: psycopg.Connection[Any], final: Plan) -> None:
    """Under the target's lock: another run that committed this target after the shared
    stage was filled read a newer state of the source; writing the stage now would
    take the target back to an older one."""
    seen = final.shared.runs_seen.get(final.target, 0)
    row = conn.execute(
        sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {}.run_history WHERE pipeline = %s AND target = %s "
            "AND status = 'succeeded' AND id > %s)"
        ).format(sql.Identifier(final.state_schema)),
        (final.pipeline, final.target, seen),
    ).fetchone()
    if row is not None and row[0]:
        raise _Superseded


def _joined(final: Plan) -> EmatixFlowError:
    first = final.problems[0].error()
    return type(first)("\n".join(p.message for p in final.problems))


def _step(
    conn: psycopg.Connection[Any],
    sconn: psycopg.Connection[Any] | None,
    plan: Plan,
    step: Step,
    counts: dict[str, Any],
    result: TargetResult,
    started: datetime,
    where: str,
    scols: Any,
    on_rows: Callable[[int], None] | None = None,
) -> dict[str, Any] | int | None:
    ctx = plan.context
    if step.kind == "stage":
        conn.execute(stage_sql(ctx, scols))
        return None
    if step.kind == "copy":
        assert sconn is not None
        try:
            n = pipe(sconn, conn, copy_out_sql(ctx, scols), copy_in_sql(ctx), on_rows=on_rows)
        except psycopg.Error as exc:
            if exc.sqlstate in _ENCODING_ERRORS:
                raise untranslatable(exc, sconn, conn, ctx, scols, where) from exc
            raise SourceError(
                f"{where}: streaming the source {plan.source} failed: {driver_message(exc)}"
            ) from exc
        counts["copied"] = n
        return n
    if step.kind == "setting":
        try:
            with conn.transaction():
                conn.execute(step.sql)
        except psycopg.Error as exc:  # e.g. a deferred unique constraint checked now
            raise explain(exc, conn=conn, ctx=ctx, where=where, step=step.label) from exc
        return None
    if step.kind == "check":
        shared = plan.shared
        # Targets reading one shared stage with the same check (no per-target setting
        # in it, such as a watermark) ask the same question of the same rows: once.
        memo = shared is not None and "current_setting(" not in step.sql
        if memo and step.sql in shared.checked:
            return 0
        try:
            # A savepoint rolled back in any case (the check writes nothing): the planner
            # setting below ends with it, and explain() probes what follows it.
            with conn.transaction(force_rollback=True):
                # Grouping a batch whose keys are (nearly) all distinct: a sort finds a
                # repeat in half the time a hash table of one entry per key takes.
                conn.execute("SET LOCAL enable_hashagg = off")
                found = conn.execute(step.sql).fetchall()
        except psycopg.Error as exc:
            raise explain(exc, conn=conn, ctx=ctx, where=where, step=step.label) from exc
        if found:
            raise duplicates_error(conn.execute(duplicates_sql(ctx)).fetchall(), ctx, where)
        if memo:
            shared.checked.add(step.sql)
        return 0
    if step.kind == "ddl":
        return _ddl(conn, step.sql, plan.options.timeouts)
    if step.kind == "data":
        try:
            with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                row = cur.execute(step.sql).fetchone() or {}
        except psycopg.Error as exc:
            raise explain(exc, conn=conn, ctx=ctx, where=where, step=step.label) from exc
        nulls = int(row.get("null_incremental") or 0)
        if nulls:
            raise SourceError(
                f"{where}, column {ctx.incremental_column!r}: {nulls} source row(s) have "
                f"NULL in incremental_column={ctx.incremental_column!r}. A high-water mark "
                "cannot place them: every later run would skip them. Nothing was written. "
                "Fix: COALESCE the column in the source query (e.g. COALESCE(updated_at, "
                "created_at)), filter those rows out, or drop incremental_column=."
            )
        return _apply(row, counts, result)
    # state steps
    if step.label == "store watermark":
        column_type = cast_type(plan.physical.column(plan.incremental_column))
        value = counts.get("watermark") or plan.watermark_before
        if plan.steer.window is not None:
            # A backfill moves the stored watermark only when its window passes it (and
            # sets none where none was stored: the next run still reads everything).
            stored = plan.watermark_stored
            if stored is None or value is None:
                result.watermark_after = stored
                return 0
            row = conn.execute(
                sql.SQL("SELECT CAST(GREATEST(CAST(%s AS {t}), CAST(%s AS {t})) AS text)").format(
                    t=sql.SQL(column_type)
                ),
                (stored, value),
            ).fetchone()
            value = row[0] if row else stored
        conn.execute(
            step.sql,
            {
                "pipeline": plan.pipeline,
                "target": plan.target,
                "column": plan.incremental_column,
                "column_type": column_type,
                "watermark": value,
                "batch_id": result.batch_id,
            },
        )
        result.watermark_after = value
        return 1
    if step.label == "record the row hash version":
        conn.execute(step.sql)
        return 1
    params = _history_params(replace(result, status="succeeded"), started)
    conn.execute(step.sql, params)
    return 1


#: How long one attempt of automatic DDL waits for its lock before it lets queued
#: readers through and tries again.
DDL_ATTEMPT_S = 1.0


def _ddl(conn: psycopg.Connection[Any], statement: str, timeouts: Timeouts) -> int | None:
    """Run one DDL statement of the plan, waiting at most :data:`DDL_ATTEMPT_S` per try.

    ``ALTER TABLE`` needs an ACCESS EXCLUSIVE lock; while it waits in the lock queue
    every new reader of the table queues behind it. Short attempts (each in a
    savepoint) with a pause between them let those readers through; the attempts stop
    when the run's ``lock_timeout`` is spent, and the last LockNotAvailable is raised.
    """
    budget = timeouts.lock_s
    deadline = None if budget is None else time.monotonic() + budget
    pause = 0.05
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        attempt = DDL_ATTEMPT_S if left is None else max(min(DDL_ATTEMPT_S, left), 0.001)
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, true)", (f"{round(attempt * 1000)}ms",)
                )
                cur = conn.execute(statement)
                rows = cur.rowcount if cur.rowcount >= 0 else None
            conn.execute(
                "SELECT set_config('lock_timeout', %s, true)", (timeouts.settings()[0][1],)
            )
            return rows
        except psycopg.errors.LockNotAvailable:
            if deadline is not None and time.monotonic() + pause >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def _waited(
    cause: BaseException | None,
    conn: psycopg.Connection[Any],
    plan: Plan,
    timeouts: Timeouts,
    where: str,
    result: TargetResult,
) -> EmatixFlowError | None:
    """A lock or statement timeout as an error that names the table and, where the
    server still shows them, the sessions holding it."""
    step = f" in step {result.failed_step!r}" if result.failed_step else ""
    if isinstance(cause, psycopg.errors.LockNotAvailable):
        blockers = _lock_holders(conn, _locked_names(plan, source_side=False))
        if not blockers and plan.path == "cross_db":
            # the wait may have been on the source side (its table locked)
            with (
                contextlib.suppress(EmatixFlowError, psycopg.Error),
                plan.source_conn_obj.open(autocommit=True, connect_timeout=5) as sconn,
            ):
                blockers = _lock_holders(sconn, _locked_names(plan, source_side=True))
        held = (
            "; ".join(blockers)
            if blockers
            else "the session holding it is gone or not visible to this role"
        )
        return SyncError(
            f"{where}: gave up waiting for a lock after {_secs(timeouts.lock_s)} "
            f"(lock_timeout){step}: {held}. Nothing was written. Run again once it is "
            "released, or raise lock_timeout= (EMATIX_FLOW_LOCK_TIMEOUT, seconds)."
        )
    if isinstance(cause, psycopg.errors.QueryCanceled) and "statement timeout" in str(cause):
        return SyncError(
            f"{where}: a statement ran longer than statement_timeout="
            f"{_secs(timeouts.statement_s)}{step} and was cancelled. Nothing was written. "
            "Raise statement_timeout= (EMATIX_FLOW_STATEMENT_TIMEOUT, seconds) or make the "
            "source query cheaper."
        )
    return None


def _secs(seconds: float | None) -> str:
    return "no limit" if seconds is None else f"{seconds:g}s"


#: A SQL string literal ('…', E'…' included): hidden from the lock report.
_LITERAL = r"[eE]?'(?:[^']|'')*'"


def _locked_names(plan: Plan, *, source_side: bool) -> list[str]:
    """The tables of this plan in one database: the target's, or the source's."""
    source = plan.source_obj
    names = [] if source_side else [plan.target]
    if source.kind == "table" and (source_side or plan.path == "same_db"):
        names.append(f"{source.schema}.{source.table}")
    return names


def _lock_holders(conn: psycopg.Connection[Any], names: list[str]) -> list[str]:
    """Other sessions holding a lock on one of the tables ``names`` — or an ACCESS
    EXCLUSIVE lock on any table of this database — with their query."""
    ids = [sql.SQL("{}").format(sql.Identifier(*n.split(".", 1))).as_string(None) for n in names]
    try:
        rows = conn.execute(
            "SELECT DISTINCT l.pid, l.relation::regclass::text, l.mode, a.state, "
            "a.usename, a.application_name, "
            # the statement's shape only: its literals may hold secrets (a password)
            "left(regexp_replace(regexp_replace(a.query, %s, '?', 'g'), '\\s+', ' ', 'g'), "
            "200) "
            "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.granted AND l.pid <> pg_backend_pid() AND l.locktype = 'relation' "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND (l.relation = ANY (SELECT to_regclass(n) FROM unnest(%s::text[]) AS n) "
            "OR l.mode = 'AccessExclusiveLock') ORDER BY 1 LIMIT 5",
            (_LITERAL, ids),
        ).fetchall()
    except psycopg.Error:
        return []
    return [
        f"table {rel} is locked by pid {pid} ({mode}"
        + (f", user {user}" if user else "")
        + (f", application {app!r}" if app else "")
        + (f", {st}" if st else "")
        + (f": {query!r}, literals hidden" if query else "")
        + ")"
        for pid, rel, mode, st, user, app, query in rows
    ]


def _apply(values: dict[str, Any], counts: dict[str, Any], result: TargetResult) -> dict[str, Any]:
    """Fold one data statement's counts into the result (statements report parts:
    ``source_rows``/``watermark``, ``inserted``/``updated``/``deleted``, or ``written``
    = inserted + updated for scd2, ``expired``)."""
    counts.update(values)
    result.rows_expired = int(counts.get("expired", 0)) + int(counts.get("expired_new", 0))
    updated = int(counts.get("updated", 0))
    if "written" in counts:
        written = int(counts["written"])
        inserted = written - updated
    else:
        inserted = int(counts.get("inserted", 0))
        written = inserted + updated
    result.rows_inserted = inserted
    result.rows_updated = updated
    # a full refresh deletes every row first: those count as deleted
    result.rows_deleted = int(counts.get("deleted", 0)) + int(counts.get("refreshed", 0))
    source_rows = int(counts.get("source_rows", counts.get("copied", 0)))
    result.source_rows = source_rows
    result.rows_unchanged = max(source_rows - written, 0)
    return values


def record_failure(
    target_connection: Any,
    *,
    pipeline: str,
    target: str,
    mode: str,
    error: str,
    status: str = "failed",
) -> None:
    """Best effort: a run-history row for a target that failed before it could execute
    (an invalid definition found while planning), or that was not run at all
    (``status="not_run"``: an earlier target failed). Never raises."""
    from ematix_flow.source import resolve_connection

    now = datetime.now(UTC)
    result = TargetResult(pipeline=pipeline, target=target, mode=mode, status=status, error=error)
    try:
        conn = resolve_connection(target_connection)
        with conn.open(autocommit=True, connect_timeout=5) as pg:
            state.ensure_state(pg, state.state_schema())
            _record(pg, state.state_schema(), result, now)
    except (EmatixFlowError, psycopg.Error):
        pass
