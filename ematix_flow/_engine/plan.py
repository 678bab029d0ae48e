"""``plan()``: turn a target's options and source into a :class:`Plan` — plain data.

A Plan holds the ordered SQL steps (label, kind, SQL text) and every decision with its
reason: the resolved connections (redacted), the path and why, the merge keys and where
they came from, compare/update columns, the columns the framework adds, the watermark,
the drift to apply, and the problems that will stop the run. ``preview`` renders it,
``dry_run`` executes it and rolls back, a run executes and commits: one code path.

A Plan is built from facts read from the databases (:mod:`.inspect`); without them
(``inspect=False`` or an unreachable database) the parts that need them are marked
unknown and the DDL steps are the ``IF NOT EXISTS`` forms. The executor rebuilds the
plan from fresh facts under its advisory lock, so what runs always matches the
database. ``to_dict()`` is stable: no timestamps, batch ids or random values (those are
bound at execute time through ``current_setting('ematix_flow.*')``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from psycopg import sql

from ematix_flow._engine import framework
from ematix_flow._engine.explain import duplicates_sql
from ematix_flow._engine.inspect import SourceColumn, TargetFacts
from ematix_flow._engine.keys import resolve_keys
from ematix_flow._engine.options import TargetOptions
from ematix_flow._engine.sql_append import append_sql
from ematix_flow._engine.sql_common import (
    HASH_NAME,
    HASH_VERSION,
    STAGE,
    SqlContext,
    cast_type,
    render,
    row_hash,
)
from ematix_flow._engine.sql_load import (
    load_copy_in_sql,
    load_copy_out_sql,
    load_insert_sql,
    loaded_stats_sql,
)
from ematix_flow._engine.sql_merge import merge_sql
from ematix_flow._engine.sql_scd2 import (
    scd2_close_sql,
    scd2_insert_sql,
    source_count_sql,
    ttl_sql,
)
from ematix_flow._engine.state import (
    record_row_hash_sql,
    record_run_sql,
    state_schema,
    upsert_watermark_sql,
)
from ematix_flow._engine.steer import KEEP, Steer
from ematix_flow._errors import (
    DefinitionError,
    DriftError,
    EmatixFlowError,
    SourceError,
    SyncError,
)
from ematix_flow.source import Source

__all__ = ["Decision", "Plan", "Problem", "Step", "build_plan", "plan"]

UNKNOWN = "unknown"
#: The step that follows a load straight into a new table and reads what it loaded;
#: when the load falls back to the staged steps, it is not run.
LOADED_WATERMARK = "read the loaded watermark"


@dataclass(frozen=True)
class Step:
    """One statement of a plan. ``kind``: ddl, stage, copy, load, setting, check, data,
    state."""

    label: str
    kind: str
    sql: str
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "kind": self.kind, "sql": self.sql, "note": self.note}


@dataclass(frozen=True)
class Decision:
    topic: str
    value: Any
    reason: str

    def to_dict(self) -> dict[str, Any]:
        v = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"topic": self.topic, "value": v, "reason": self.reason}


@dataclass(frozen=True)
class Problem:
    """Something that stops the run; the executor raises ``error(message)``."""

    kind: str  # drift | unique_constraint | source_column | source
    message: str

    def error(self) -> EmatixFlowError:
        cls = {
            "drift": DriftError,
            "source_column": SourceError,
            "source": SourceError,
            "definition": DefinitionError,
        }.get(self.kind, SyncError)
        return cls(self.message)

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


@dataclass(frozen=True)
class Plan:
    pipeline: str
    target: str
    mode: str
    path: str
    target_connection: str
    source_connection: str
    source: str
    source_sql: str
    keys: tuple[str, ...]
    compare_columns: tuple[str, ...]
    update_columns: tuple[str, ...]
    columns: tuple[dict[str, Any], ...]
    table_exists: bool | None
    drift: tuple[dict[str, Any], ...]
    incremental_column: str | None
    watermark_before: str | None
    handle_deletes: str | None
    steps: tuple[Step, ...]
    decisions: tuple[Decision, ...]
    problems: tuple[Problem, ...]
    warnings: tuple[str, ...]
    unknown: tuple[str, ...]
    # Not part of the data: what execute() needs to run and re-plan.
    options: TargetOptions = field(repr=False, compare=False)
    source_obj: Source = field(repr=False, compare=False)
    target_conn_obj: Any = field(repr=False, compare=False)
    source_conn_obj: Any = field(repr=False, compare=False)
    physical: Any = field(repr=False, compare=False)
    context: SqlContext = field(repr=False, compare=False)
    state_schema: str = field(repr=False, compare=False, default="ematix_flow")
    source_columns: tuple[SourceColumn, ...] | None = field(repr=False, compare=False, default=None)
    steer: Steer = field(repr=False, compare=False, default=Steer())
    #: The watermark stored in the target (``watermark_before`` is the one the source is
    #: filtered by, which a steered run may set otherwise).
    watermark_stored: str | None = field(repr=False, compare=False, default=None)
    #: For a load straight into a new table: the staged steps that replace the load
    #: step when it fails (they diagnose the failure, or do the work).
    fallback_steps: tuple[Step, ...] = field(repr=False, compare=False, default=())
    #: The run's shared stage this target reads (:class:`.fanout.Shared`), if any.
    shared: Any = field(repr=False, compare=False, default=None)

    @property
    def framework_columns(self) -> tuple[str, ...]:
        return tuple(c["name"] for c in self.columns if c["framework"])

    def decision(self, topic: str) -> Decision:
        for d in self.decisions:
            if d.topic == topic:
                return d
        raise KeyError(topic)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "target": self.target,
            "mode": self.mode,
            "path": self.path,
            "target_connection": self.target_connection,
            "source_connection": self.source_connection,
            "source": self.source,
            "source_sql": self.source_sql,
            "keys": list(self.keys),
            "compare_columns": list(self.compare_columns),
            "update_columns": list(self.update_columns),
            "columns": [dict(c) for c in self.columns],
            "framework_columns": list(self.framework_columns),
            "table_exists": self.table_exists,
            "drift": [dict(d) for d in self.drift],
            "incremental_column": self.incremental_column,
            "watermark_before": self.watermark_before,
            "handle_deletes": self.handle_deletes,
            "decisions": [d.to_dict() for d in self.decisions],
            "problems": [p.to_dict() for p in self.problems],
            "warnings": list(self.warnings),
            "unknown": list(self.unknown),
            "steps": [s.to_dict() for s in self.steps],
        }


def _describe(conn: Any, *, short: bool = False) -> str:
    try:
        return str(conn.describe(short=True) if short else conn.describe())
    except Exception:  # pragma: no cover - a foreign object
        return repr(conn)


def _path(options: TargetOptions, source_conn: Any, target_conn: Any) -> tuple[str, str]:
    if options.force_path:
        return options.force_path, f"forced by force_path={options.force_path!r}"
    s, t = _describe(source_conn, short=True), _describe(target_conn, short=True)
    differs = source_conn.same_session_as(target_conn)
    if differs is None:
        return "same_db", (
            f"source ({s}) and target ({t}) are the same database, role and session "
            "options: the source SQL runs inside the target's statements"
        )
    if differs.startswith("server or database"):
        return "cross_db", (
            f"source ({s}) and target ({t}) are different databases: rows are streamed by "
            "binary COPY into a temporary stage"
        )
    return "cross_db", (
        f"source ({s}) and target ({t}) are the same database but differ in {differs}, "
        "so the source query may read other rows than the target's session would: rows "
        "are streamed by binary COPY from the source connection into a temporary stage"
    )


def plan(
    options: TargetOptions,
    source: Source,
    target_connection: Any,
    *,
    pipeline: str,
    inspect: bool = True,
    connect_timeout: int = 10,
    steer: Steer | None = None,
    shared: Any = None,
) -> Plan:
    """Plan one target. With ``inspect`` the databases are read (table, indexes,
    watermark, source columns); when they cannot be reached the plan marks those parts
    unknown instead of failing.

    Example::

        p = plan(TargetOptions(table=spec, mode="merge"), src, conn, pipeline="p")
        for step in p.steps:
            print(step.label, step.sql)
    """
    from ematix_flow.source import resolve_connection

    target_conn = resolve_connection(target_connection)
    source_conn = source.resolved_connection()
    schema = state_schema()
    tfacts: TargetFacts | None = None
    scols: tuple[SourceColumn, ...] | None = None
    source_encoding: str | None = None
    unknown: list[str] = []
    source_failed: str | None = None
    if inspect:
        from ematix_flow._engine.inspect import describe, inspect_target

        try:
            with target_conn.open(autocommit=True, connect_timeout=connect_timeout) as conn:
                tfacts = inspect_target(
                    conn,
                    options.table,
                    state_schema=schema,
                    pipeline=pipeline,
                    incremental=options.incremental_column is not None,
                    count_rows=steer is not None and steer.full_refresh,
                )
        except EmatixFlowError as exc:
            unknown.append(f"target: {exc}")
        except Exception as exc:  # e.g. no privilege to read the catalog
            import psycopg

            if not isinstance(exc, psycopg.Error):
                raise
            unknown.append(f"target: {_driver_message(exc)}")
        try:
            with source_conn.open(autocommit=True, connect_timeout=connect_timeout) as conn:
                scols = describe(conn, source, options.table)
                source_encoding = conn.info.parameter_status("server_encoding")
        except SourceError as exc:  # the source SQL itself is wrong: a run would fail
            source_failed = str(exc)
        except EmatixFlowError as exc:
            unknown.append(f"source: {exc}")
        except Exception as exc:  # not the SQL itself: e.g. the connection was lost
            import psycopg

            if not isinstance(exc, psycopg.Error):
                raise
            unknown.append(f"source: {_driver_message(exc)}")
    else:
        unknown.append("databases not inspected")
    planned = build_plan(
        options,
        source,
        target_conn,
        source_conn,
        pipeline=pipeline,
        tfacts=tfacts,
        scols=scols,
        unknown=tuple(unknown),
        state_schema_name=schema,
        steer=steer,
        source_encoding=source_encoding,
        shared=shared,
    )
    if source_failed is None:
        return planned
    where = f"Pipeline {pipeline}, target {options.table.qualified_name}"
    failed = Problem("source", f"{where}: the source {planned.source} failed: {source_failed}")
    return replace(planned, problems=(*planned.problems, failed))


def _driver_message(exc: Exception) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return primary or " ".join(str(exc).split())


def build_plan(
    options: TargetOptions,
    source: Source,
    target_conn: Any,
    source_conn: Any,
    *,
    pipeline: str,
    tfacts: TargetFacts | None,
    scols: tuple[SourceColumn, ...] | None,
    unknown: tuple[str, ...] = (),
    state_schema_name: str = "ematix_flow",
    steer: Steer | None = None,
    source_encoding: str | None = None,
    shared: Any = None,
) -> Plan:
    """The pure part of :func:`plan`: no I/O, facts passed in (``None`` = unknown).
    ``source_encoding``: the source database's ``server_encoding``, when known.
    ``shared``: the run's shared stage (:mod:`.fanout`) the statements read instead of
    the source.

    The phases, in order: where the statements read the source; keys and the compare
    and update columns; the physical table with the framework's columns; the checks on
    the source's columns; the target's DDL and drift; the watermark; the data steps
    (staged, or straight into a new table); the state steps."""
    steer = steer or Steer()
    spec = options.table
    d = _Draft(where=f"Pipeline {pipeline}, target {spec.qualified_name}", unknown=list(unknown))
    path, stmt_path = _decide_path(d, options, source, source_conn, target_conn, shared)
    keys, compare, update = _decide_columns(d, options, pipeline)
    reflected = tfacts.reflected if tfacts is not None else None
    physical, fw = _decide_framework(d, options, keys, reflected, tfacts)
    source_sql = _check_source(d, options, source, scols, shared)
    direct = _loads_directly(options, tfacts, steer, stmt_path, scols, source_encoding)
    table_exists, drift_info, hash_record, after_load = _target_ddl(
        d, options, physical, fw, keys, compare, tfacts, state_schema_name, direct
    )
    watermark_before, watermark_stored, filt, ctx_append_keys = _decide_watermark(
        d, options, physical, tfacts, steer, pipeline, state_schema_name
    )
    declared = spec.declared_columns
    ctx = SqlContext(
        table=physical,
        declared=declared,
        keys=keys,
        compare=compare,
        update=update,
        path=stmt_path,
        source_sql=shared.select_sql(spec) if shared is not None else source_sql,
        incremental_column=options.incremental_column,
        watermark_filter=filt,
        event_timestamp_column=options.event_timestamp_column,
        watermark_op=">=",
        lookback=options.lookback_sql,
        with_hash=options.mode in ("scd1", "scd2"),
        with_valid_from=options.mode == "scd2",
        append_keys=ctx_append_keys,
        window_hi=steer.window is not None,
        skip_loaded_all=steer.window is not None and options.mode == "append",
        staged_source=shared is not None,
    )
    fallback = _data_steps(d, options, ctx, physical, tfacts, steer, stmt_path, scols, after_load)
    steps = d.steps
    if options.incremental_column:
        steps.append(
            Step("store watermark", "state", render(upsert_watermark_sql(state_schema_name)))
        )
    if hash_record is not None:
        steps.append(hash_record)
    steps.append(Step("record run", "state", render(record_run_sql(state_schema_name))))

    columns = tuple(
        {"name": c.name, "type": c.type.ddl, "nullable": c.nullable, "framework": c.framework}
        for c in physical.columns
    )
    return Plan(
        pipeline=pipeline,
        target=spec.qualified_name,
        mode=options.mode,
        path=path,
        target_connection=_describe(target_conn),
        source_connection=_describe(source_conn),
        source=source.label,
        source_sql=source_sql,
        keys=keys,
        compare_columns=compare,
        update_columns=update,
        columns=columns,
        table_exists=table_exists,
        drift=tuple(drift_info),
        incremental_column=options.incremental_column,
        watermark_before=watermark_before,
        handle_deletes=options.handle_deletes,
        steps=tuple(steps),
        decisions=tuple(d.decisions),
        problems=tuple(d.problems),
        warnings=tuple(d.warnings),
        unknown=tuple(d.unknown),
        options=options,
        source_obj=source,
        target_conn_obj=target_conn,
        source_conn_obj=source_conn,
        physical=physical,
        context=ctx,
        state_schema=state_schema_name,
        source_columns=scols,
        steer=steer,
        watermark_stored=watermark_stored,
        fallback_steps=fallback,
        shared=shared,
    )


@dataclass
class _Draft:
    """What the planning phases add up to: each phase appends its decisions (with their
    reasons), the problems that will stop the run, warnings, what is unknown, and its
    steps, in the order they run."""

    where: str
    decisions: list[Decision] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)


def _decide_path(
    d: _Draft,
    options: TargetOptions,
    source: Source,
    source_conn: Any,
    target_conn: Any,
    shared: Any,
) -> tuple[str, str]:
    """The path (same-DB or cross-DB) and where the statements read the source: the
    source itself (same-DB), the stage the COPY fills (cross-DB), or the run's shared
    stage in the target's own session."""
    path, path_reason = _path(options, source_conn, target_conn)
    d.decisions.append(Decision("path", path, path_reason))
    stmt_path = "same_db" if shared is not None else path
    if shared is not None:
        d.decisions.append(Decision("source_read", "shared stage", shared.reason))
    d.decisions.append(Decision("target_connection", _describe(target_conn), "resolved connection"))
    d.decisions.append(Decision("source_connection", _describe(source_conn), source.label))
    return path, stmt_path


def _decide_columns(
    d: _Draft, options: TargetOptions, pipeline: str
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The merge keys, compare columns and update columns, each with its reason."""
    spec = options.table
    where = d.where
    decisions = d.decisions
    problems = d.problems
    warnings = d.warnings
    declared = spec.declared_columns
    declared_names = tuple(c.name for c in declared)
    keys: tuple[str, ...] = ()
    if options.mode != "append":
        rk = resolve_keys(spec, options.keys, pipeline=pipeline, mode=options.mode)
        keys = rk.columns
        decisions.append(Decision("keys", keys, rk.reason))
        if rk.warning:
            warnings.append(rk.warning)
    non_key = tuple(c for c in declared_names if c not in keys)
    compare: tuple[str, ...] = ()
    update: tuple[str, ...] = ()
    if options.mode in ("scd1", "scd2"):
        if options.compare_columns:
            compare = options.compare_columns
            decisions.append(Decision("compare_columns", compare, "[from compare_columns=]"))
        elif options.mode == "scd2" and options.event_timestamp_column in non_key:
            # A new event time alone is not a new version (spec §1 compares email and
            # name, not last_seen; §4 leaves last_event_ts out): the event time only
            # dates the versions that the other columns open.
            event = options.event_timestamp_column
            compare = tuple(c for c in non_key if c != event)
            decisions.append(
                Decision(
                    "compare_columns",
                    compare,
                    "[default: every non-key declared column except "
                    f"event_timestamp_column={event!r}]",
                )
            )
        else:
            compare = non_key
            decisions.append(
                Decision("compare_columns", compare, "[default: every non-key declared column]")
            )
    if options.mode in ("merge", "scd1"):
        if options.update_columns:
            update = options.update_columns
            decisions.append(Decision("update_columns", update, "[from update_columns=]"))
        else:
            update = non_key
            decisions.append(
                Decision("update_columns", update, "[default: every non-key declared column]")
            )
        if options.mode == "merge":
            compare = update
    for col in keys:
        if col in update:
            problems.append(
                Problem("definition", f"{where}: key column {col!r} cannot be in update_columns=")
            )
    nullable_keys = [k for k in keys if spec.has_column(k) and spec.column(k).nullable]
    if nullable_keys:
        problems.append(
            Problem(
                "definition",
                f"{where}: key column(s) {', '.join(map(repr, nullable_keys))} may be NULL "
                f"(declared nullable); keys {decisions_reason(decisions, 'keys')}. A NULL key "
                "matches no row — not even another NULL — so every run would insert that row "
                "again. Declare the column NOT NULL (nullable=False, or drop '| None' from "
                "its annotation; COALESCE it in the source query if it can be NULL there), or "
                "pass keys= naming NOT NULL columns.",
            )
        )
    pk_updated = [c for c in spec.primary_key if c in update and c not in keys]
    if pk_updated:
        decisions.append(
            Decision(
                "primary_key_updated",
                tuple(pk_updated),
                f"the merge keys ({', '.join(keys)}) {decisions_reason(decisions, 'keys')} "
                f"are not the primary key, so primary-key column(s) ({', '.join(pk_updated)}) "
                "are update columns: a source row that matches a target row by its keys "
                "overwrites that row's primary key",
            )
        )
    return keys, compare, update


def _versions_lookup(options: TargetOptions) -> bool:
    """The scd2 insert looks up each new key's latest version (history without a current
    version, or a valid_from that may not advance): by ``(keys, valid_from)``."""
    return bool(options.handle_deletes or options.ttl is not None or options.event_timestamp_column)


def _decide_framework(
    d: _Draft,
    options: TargetOptions,
    keys: tuple[str, ...],
    reflected: Any,
    tfacts: TargetFacts | None,
) -> tuple[Any, list[Any]]:
    """The physical table: the declared columns plus the framework's for the mode."""
    spec = options.table
    where = d.where
    decisions = d.decisions
    warnings = d.warnings
    replicated = tfacts is not None and tfacts.publishes_updates
    physical = framework.physical_table(
        spec,
        mode=options.mode,
        keys=keys,
        handle_deletes=options.handle_deletes,
        existing=reflected,
        versions_key=_versions_lookup(options) or replicated,
    )
    if options.mode == "scd2" and reflected is None and keys:
        decisions.append(
            Decision(
                "versions_key",
                tuple(physical.primary_key) or None,
                "built: the latest-version lookup of handle_deletes/ttl/event time needs it"
                if _versions_lookup(options) and physical.primary_key
                else "built: a publication replicates this schema's updates, which needs a "
                "replica identity"
                if physical.primary_key
                else "none: (keys, valid_from) is unique by construction, and every index "
                "on an scd2 table costs each closed version an entry; one current version "
                "per key is the partial unique index's",
            )
        )
    fw = [c for c in physical.columns if c.framework]
    if options.mode == "append" and (
        (spec.primary_key and "_batch_id" not in physical.primary_key)
        or any("_batch_id" not in u for u in physical.unique_constraints)
    ):
        warnings.append(
            f"{where}: this append table was built before batches carried their keys: its "
            "primary key / unique constraints do not include _batch_id, so a key loaded "
            "again by a later run is refused as before. Rebuild the table (drop or rename "
            "it) to keep every batch."
        )
    elif options.mode == "append" and (spec.primary_key or spec.unique_constraints):
        decisions.append(
            Decision(
                "append_keys",
                tuple(physical.primary_key) or tuple(physical.unique_constraints[0]),
                "append keeps every batch: the declared primary key and unique constraints "
                "carry _batch_id, so a key loaded again by a later run is a new row, and a "
                "key twice in one batch is refused",
            )
        )
    decisions.append(
        Decision(
            "framework_columns",
            tuple(c.name for c in fw),
            f"added by mode={options.mode!r}"
            + (" and handle_deletes='soft'" if options.handle_deletes == "soft" else ""),
        )
    )
    if options.handle_deletes:
        if options.mode == "scd2":
            how = "keys absent from the snapshot get their current version closed (history kept)"
        elif options.handle_deletes == "hard":
            how = "keys absent from the snapshot are deleted"
        else:
            how = "keys absent from the snapshot get _deleted_at set (once)"
        decisions.append(Decision("handle_deletes", options.handle_deletes, how))
    if options.ttl is not None:
        decisions.append(
            Decision("ttl", str(options.ttl), "current versions older than ttl are closed first")
        )
    if options.event_timestamp_column:
        decisions.append(
            Decision(
                "valid_from",
                options.event_timestamp_column,
                "[from event_timestamp_column=] (run time when it is NULL)",
            )
        )
    return physical, fw


def _check_source(
    d: _Draft,
    options: TargetOptions,
    source: Source,
    scols: tuple[SourceColumn, ...] | None,
    shared: Any,
) -> str:
    """The source SQL, and a problem for each declared column the source lacks."""
    spec = options.table
    where = d.where
    problems = d.problems
    declared_names = tuple(c.name for c in spec.declared_columns)
    # --- the source ---------------------------------------------------------------
    try:
        source_sql = source.select_sql(spec)
    except EmatixFlowError as exc:
        problems.append(Problem("source_column", f"{where}: {exc}"))
        source_sql = ""
    if scols is not None:
        have = {c.name for c in scols}
        missing = [c for c in declared_names if c not in have]
        if missing:
            if source.kind == "table":
                detail = ", ".join(
                    f"{c!r}"
                    + (
                        f" (mapped from {source.source_column(c)!r})"
                        if source.source_column(c) != c
                        else ""
                    )
                    for c in missing
                )
                fix = (
                    f"source table {source.schema}.{source.table} has no column for target "
                    f"column(s) {detail}; add them to column_map={{target: source}} or to "
                    "the source table"
                )
            else:
                fix = (
                    f"the source query returns no column named {', '.join(map(repr, missing))} "
                    f"(it returns {', '.join(c.name for c in scols) or 'no columns'}); alias a "
                    "source column to that name (SELECT … AS name)"
                )
            problems.append(Problem("source_column", f"{where}, column {missing[0]!r}: {fix}"))
    else:
        d.unknown.append("source columns (source not inspected)")
    return source_sql


def _target_ddl(
    d: _Draft,
    options: TargetOptions,
    physical: Any,
    fw: list[Any],
    keys: tuple[str, ...],
    compare: tuple[str, ...],
    tfacts: TargetFacts | None,
    state_schema_name: str,
    direct: bool,
) -> tuple[bool | None, list[dict[str, Any]], Step | None, list[Step] | None]:
    """Create the table or apply its additive drift; refuse the rest; the indexes and
    the row-hash version the mode needs. ``direct``: the table is created bare and filled
    straight in; its keys and indexes are built after the load — once, by sorting,
    rather than row by row — by the steps returned last (``None`` when not direct)."""
    from ematix_flow._schema import (
        add_constraints_sql,
        additive_sql,
        compare_table,
        create_schema_sql,
        create_table_sql,
    )
    from ematix_flow._schema.drift import UniqueConstraintMissing, destructive

    spec = options.table
    where = d.where
    decisions = d.decisions
    problems = d.problems
    warnings = d.warnings
    reflected = tfacts.reflected if tfacts is not None else None
    # --- the target table: create, drift, indexes ------------------------------------
    # merge/scd1 match rows by their keys; any other unique constraint is created
    # deferrable and deferred in the run, so rows that swap a unique value converge.
    swap_keys = keys if options.mode in ("merge", "scd1") else None
    direct = direct and reflected is None and tfacts is not None
    after_load: list[Step] | None = [] if direct else None
    create_sql = render(
        create_table_sql(physical, deferrable_except=swap_keys, constraints=not direct)
    )
    if after_load is not None:
        keys_sql = add_constraints_sql(physical, deferrable_except=swap_keys)
        if keys_sql is not None:
            after_load.append(
                Step(
                    "build the primary key and unique constraints",
                    "load",
                    render(keys_sql),
                    note="after the load: one index build each; a key twice fails here",
                )
            )
    steps = d.steps
    drift_info: list[dict[str, Any]] = []
    table_exists: bool | None
    index_name = framework.current_index_name(physical)
    if tfacts is None:
        table_exists = None
        d.unknown.append("target table (target not inspected)")
        steps.append(
            Step("create schema if missing", "ddl", render(create_schema_sql(physical.schema)))
        )
        steps.append(
            Step(
                "create table if missing",
                "ddl",
                create_sql,
            )
        )
    elif reflected is None:
        table_exists = False
        steps.append(Step("create schema", "ddl", render(create_schema_sql(physical.schema))))
        steps.append(
            Step(
                "create table",
                "ddl",
                create_sql,
            )
        )
    else:
        table_exists = True
        diffs = compare_table(physical, reflected)
        for diff in diffs:
            if diff.tolerated:  # e.g. an undeclared nullable column: left alone, said once
                warnings.append(diff.describe())
            else:
                drift_info.append({"change": diff.describe(), "additive": bool(diff.additive)})
        bad = destructive(diffs)
        built_for = framework.mode_of(reflected)
        if bad and built_for is not None and built_for != options.mode:
            problems.append(
                Problem(
                    "drift",
                    f"{where}: the existing table was built for mode={built_for!r} (its "
                    f"columns say so), and this target is mode={options.mode!r}, which needs "
                    "the columns "
                    + ", ".join(c.name for c in fw)
                    + ". ematix-flow does not convert a table from one mode to another. "
                    f"Ways out: keep mode={built_for!r}; or sync into a new table (another "
                    "table name); or drop or rename the old table so the next run builds it "
                    f"for mode={options.mode!r} (its history starts again).",
                )
            )
            bad = []
        if bad:
            problems.append(
                Problem(
                    "drift",
                    f"{where}: the existing table differs from its declaration in ways "
                    "ematix-flow will not change automatically:\n"
                    + "\n".join(f"  - {d.describe()}" for d in bad),
                )
            )
        for stmt in additive_sql(physical, diffs):
            steps.append(Step("apply additive drift", "ddl", render(stmt)))
        if options.mode in ("merge", "scd1") and keys:
            added = {
                frozenset(diff.columns)
                for diff in diffs
                if isinstance(diff, UniqueConstraintMissing) and diff.additive
            }
            if frozenset(keys) not in tfacts.unique_sets | added:
                problems.append(
                    Problem(
                        "unique_constraint",
                        f"{where}: the table has no unique constraint or unique index on "
                        f"({', '.join(keys)}), which mode={options.mode!r} needs for its "
                        f"merge keys {decisions_reason(decisions, 'keys')}. Fix: ALTER TABLE "
                        f"{spec.qualified_name} ADD UNIQUE ({', '.join(keys)}); or declare "
                        "that unique constraint on the table (natural_key() / "
                        "__unique_constraints__) so the framework adds it; or pass keys= "
                        "naming columns the table already has a unique constraint on.",
                    )
                )
    hash_record: Step | None = None
    if options.mode in ("scd1", "scd2") and tfacts is not None:
        record = Step(
            "record the row hash version",
            "state",
            render(record_row_hash_sql(state_schema_name, spec.qualified_name, HASH_VERSION)),
        )
        if reflected is None:
            hash_record = record
        elif tfacts.row_hash_version != HASH_VERSION:
            hashed = row_hash("t", [(c, physical.column(c).type.ddl) for c in compare])
            steps.append(
                Step(
                    "migrate row_hash to the canonical hash",
                    "ddl",
                    render(
                        sql.SQL(
                            "UPDATE {} AS t SET row_hash = {} WHERE t.row_hash IS DISTINCT FROM {}"
                        ).format(sql.Identifier(physical.schema, physical.name), hashed, hashed)
                    ),
                    note="recomputed from the stored values: no row changes, no version opens",
                )
            )
            hash_record = record
            decisions.append(
                Decision(
                    "row_hash",
                    HASH_NAME,
                    "the table was built with an earlier row hash (session-dependent); this "
                    "run recomputes every stored hash from the stored values first, so no "
                    "version is opened and no row is rewritten for it",
                )
            )
    if options.mode == "scd2" and (tfacts is None or index_name not in tfacts.index_names):
        (steps if after_load is None else after_load).append(
            Step(
                "create current-version index",
                "ddl" if after_load is None else "load",
                render(
                    sql.SQL(
                        "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({}) WHERE is_current"
                    ).format(
                        sql.Identifier(index_name),
                        sql.Identifier(physical.schema, physical.name),
                        sql.SQL(", ").join(map(sql.Identifier, keys)),
                    )
                ),
                note="one current version per key; serves the current-row lookups",
            )
        )
    versions = (*keys, "valid_from")
    unkeyed = (
        options.mode == "scd2"
        and reflected is not None
        and tfacts is not None
        and bool(keys)
        and frozenset(versions) not in tfacts.unique_sets
    )
    if unkeyed and tfacts is not None and tfacts.needs_replica_identity and spec.primary_key:
        # the declared key with valid_from appended: the key a table built with it has
        versions_pk = (*spec.primary_key, "valid_from")
        steps.append(
            Step(
                "build the versions' primary key",
                "ddl",
                render(
                    sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                        sql.Identifier(physical.schema, physical.name),
                        sql.SQL(", ").join(map(sql.Identifier, versions_pk)),
                    )
                ),
                note="a publication replicates this table's updates, which needs a replica "
                "identity: closing a version would fail without one",
            )
        )
    elif (
        unkeyed
        and tfacts is not None
        and (_versions_lookup(options) or tfacts.future_valid_from)
        and framework.versions_index_name(physical) not in tfacts.index_names
    ):
        steps.append(
            Step(
                "create versions index",
                "ddl",
                render(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}, valid_from)").format(
                        sql.Identifier(framework.versions_index_name(physical)),
                        sql.Identifier(physical.schema, physical.name),
                        sql.SQL(", ").join(map(sql.Identifier, keys)),
                    )
                ),
                note="the latest-version lookup of handle_deletes/ttl/event time reads it",
            )
        )
    return table_exists, drift_info, hash_record, after_load


def _decide_watermark(
    d: _Draft,
    options: TargetOptions,
    physical: Any,
    tfacts: TargetFacts | None,
    steer: Steer,
    pipeline: str,
    state_schema_name: str,
) -> tuple[str | None, str | None, bool, tuple[str, ...]]:
    """Which source rows this run reads: (watermark the source is filtered by, the
    stored one, whether to filter, the keys an append skips loaded rows by)."""
    spec = options.table
    where = d.where
    decisions = d.decisions
    problems = d.problems
    steps = d.steps
    # --- watermark -----------------------------------------------------------------
    ctx_append_keys = (
        (tuple(spec.primary_key) or tuple(spec.unique_constraints[0]))
        if options.mode == "append" and (spec.primary_key or spec.unique_constraints)
        else ()
    )
    nullable_append = [c for c in ctx_append_keys if spec.column(c).nullable]
    if nullable_append:
        problems.append(
            Problem(
                "definition",
                f"{where}: key column(s) {', '.join(map(repr, nullable_append))} of this "
                "append target may be NULL (declared nullable). A NULL key cannot tell a row "
                "already loaded from a new one, nor a key twice in a batch. Declare the "
                "column NOT NULL (nullable=False, or drop '| None'), or declare the key on "
                "NOT NULL columns.",
            )
        )
    if options.mode == "append" and options.incremental_column and not ctx_append_keys:
        wm_index = framework.watermark_index_name(physical, options.incremental_column)
        if tfacts is None or wm_index not in tfacts.index_names:
            steps.append(
                Step(
                    "create watermark index",
                    "ddl",
                    render(
                        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                            sql.Identifier(wm_index),
                            sql.Identifier(physical.schema, physical.name),
                            sql.Identifier(options.incremental_column),
                        )
                    ),
                    note="finds the rows already loaded at the watermark's value",
                )
            )
    watermark_before: str | None = None
    watermark_stored: str | None = None
    if steer.window is not None and not options.incremental_column:
        problems.append(
            Problem(
                "definition",
                f"{where}: a backfill reprocesses a window of incremental_column=, which this "
                "target does not set; run it in full (flow run) or set incremental_column=",
            )
        )
    if options.incremental_column:
        stored = tfacts.watermark if tfacts is not None else None
        watermark_stored = stored.value if stored is not None else None
        wm_type = cast_type(spec.column(options.incremental_column))
        if steer.full_refresh:
            stored = None  # rebuilt from the whole source; the watermark is stored anew
        if stored is not None and (
            stored.column != options.incremental_column
            or (stored.column_type is not None and stored.column_type != wm_type)
        ):
            was = f"{stored.column!r} ({stored.column_type or 'type not recorded'})"
            now = f"{options.incremental_column!r} ({wm_type})"
            problems.append(
                Problem(
                    "state",
                    f"{where}: the stored watermark {stored.value!r} belongs to "
                    f"incremental_column {was}, but the pipeline now reads "
                    f"incremental_column={now}; comparing one with the other would skip or "
                    "re-read rows. Either reset this target's state (DELETE FROM "
                    f"{state_schema_name}.watermarks WHERE pipeline = '{pipeline}' AND "
                    f"target = '{spec.qualified_name}'; the next run reads the whole source) "
                    "or give the pipeline a new name.",
                )
            )
        if steer.window is not None:
            watermark_before = steer.window[0]
            filt = True
            reason = (
                f"backfill: rows with {steer.window[0]!r} <= {options.incremental_column} < "
                f"{steer.window[1]!r} (compared as {wm_type}); the stored watermark "
                f"{watermark_stored!r} moves only if the window passes it"
            )
        elif steer.watermark != KEEP:
            watermark_before = steer.watermark
            filt = watermark_before is not None
            reason = (
                f"after the reset: rows with {options.incremental_column} >= "
                f"{watermark_before!r} (compared as {wm_type})"
                if filt
                else "after the reset: no watermark, the whole source is read"
            )
        elif steer.full_refresh:
            watermark_before = None
            filt = False
            reason = "full refresh: the whole source is read; the watermark is stored anew"
        elif tfacts is None:
            watermark_before = UNKNOWN
            filt = True
            reason = "watermark unknown (target not inspected); filtered when one is stored"
        else:
            watermark_before = stored.value if stored is not None else None
            filt = watermark_before is not None
            below = (
                f" minus incremental_lookback={options.lookback_sql!r}"
                if options.incremental_lookback is not None
                else ""
            )
            again = (
                "rows already loaded are skipped (same keys and value)"
                if options.mode == "append" and ctx_append_keys
                else "rows already loaded are skipped (the same row at that value)"
                if options.mode == "append"
                else "rows already loaded are left alone when unchanged"
            )
            reason = (
                (
                    f"rows with {options.incremental_column} >= {watermark_before!r}{below} "
                    f"(stored watermark, compared as {wm_type}); {again}"
                    if filt
                    else "no watermark stored yet: full load"
                )
                + f"; a NULL {options.incremental_column} is refused (a high-water mark "
                "cannot place it)"
            )
        decisions.append(Decision("watermark", watermark_before, reason))
    else:
        filt = False
    if steer.window is not None and options.mode == "append" and not ctx_append_keys:
        problems.append(
            Problem(
                "definition",
                f"{where}: a backfill re-reads rows that may already be loaded; mode='append' "
                "can only skip them by a key, and this table declares none. Declare a primary "
                "key or natural key that identifies a source row (pk(), natural_key()), or "
                "use a keyed mode",
            )
        )
    return watermark_before, watermark_stored, filt, ctx_append_keys


def _data_steps(
    d: _Draft,
    options: TargetOptions,
    ctx: SqlContext,
    physical: Any,
    tfacts: TargetFacts | None,
    steer: Steer,
    stmt_path: str,
    scols: tuple[SourceColumn, ...] | None,
    after_load: list[Step] | None,
) -> tuple[Step, ...]:
    """The data statements: staged (stage, checks, the mode's statements), or one load
    straight into a table this run creates, then its keys (``after_load``) — and then
    the staged steps, with those keys built first, are its fallback, returned."""
    where = d.where
    decisions = d.decisions
    problems = d.problems
    steps = d.steps
    keys = ctx.keys
    reflected = tfacts.reflected if tfacts is not None else None
    swap_keys = keys if options.mode in ("merge", "scd1") else None
    # --- the data: staged, or straight into a table this run creates -------------------
    staged: list[Step] = []
    # --- cross-DB stage ---------------------------------------------------------------
    if stmt_path == "cross_db":
        staged.append(Step("create stage", "stage", stage_sql(ctx, scols)))
        staged.append(
            Step(
                "copy source → stage",
                "copy",
                copy_out_sql(ctx, scols) + ";\n" + copy_in_sql(ctx),
                note="binary COPY streamed from the source into the stage, ~128 KiB writes",
            )
        )

    # --- full refresh -------------------------------------------------------------------
    if steer.full_refresh:
        rows = tfacts.row_count if tfacts is not None else None
        count = f"{rows:,}" if rows is not None else "every"
        what = "versions" if options.mode == "scd2" else "rows"
        if options.mode == "scd2" and not steer.discard_history:
            problems.append(
                Problem(
                    "definition",
                    f"{where}: a full refresh of an scd2 target discards its history "
                    f"({count} versions would go, closed ones included). Pass "
                    "--discard-history (discard_history=True) to rebuild it from the source, "
                    "or run without --full-refresh.",
                )
            )
        if reflected is not None or tfacts is None:
            staged.append(
                Step(
                    "full refresh: delete every row",
                    "data",
                    render(
                        sql.SQL(
                            "WITH d AS (DELETE FROM {} RETURNING 1) SELECT count(*) AS refreshed "
                            "FROM d"
                        ).format(sql.Identifier(physical.schema, physical.name))
                    ),
                    note=f"{count} {what}; readers see them until this transaction commits",
                )
            )
        decisions.append(
            Decision(
                "full_refresh",
                rows,
                f"every {what[:-1]} of the target is deleted and rebuilt from the whole source "
                "in this one transaction",
            )
        )

    # --- checks on the batch ------------------------------------------------------------
    if ctx.batch_keys:
        staged.append(
            Step(
                "check: each key once in the batch",
                "check",
                render(duplicates_sql(ctx, detail=False)),
                note="a key twice in one batch would let row order pick the winner: refused",
            )
        )

    # --- data ------------------------------------------------------------------------
    if options.mode == "scd2" and options.ttl is not None:
        staged.append(
            Step("expire versions older than ttl", "data", render(ttl_sql(ctx, options.ttl)))
        )
    if options.mode == "scd2" and tfacts is not None and tfacts.reltuples == 0:
        # Statistics say "empty" (analyzed while empty): the planner would run the
        # "no current version" anti-join as a nested loop over a sequential scan of the
        # very table this statement fills — quadratic. Steer it to hash joins for this
        # transaction only; the latest-version lookup stays a nested loop (no other way).
        staged.append(
            Step(
                "planner: no nested loops over an empty-looking target",
                "setting",
                "SET LOCAL enable_nestloop = off",
                note="the target's statistics say it is empty",
            )
        )
    if swap_keys is not None and any(set(c) != set(keys) for c in physical.unique_constraints):
        staged.append(
            Step(
                "defer the other unique constraints",
                "setting",
                "SET CONSTRAINTS ALL DEFERRED",
                note="checked at commit: rows may swap a unique value within the run",
            )
        )
    deferred = [s_ for s_ in staged if s_.label == "defer the other unique constraints"]
    if options.mode == "append":
        staged.append(Step("append rows", "data", render(append_sql(ctx))))
    elif options.mode in ("merge", "scd1"):
        staged.append(
            Step(
                f"{options.mode}: upsert changed rows"
                + (f", {options.handle_deletes} deletes" if options.handle_deletes else ""),
                "data",
                render(merge_sql(ctx, mode=options.mode, handle_deletes=options.handle_deletes)),
            )
        )
    else:
        if stmt_path == "same_db" or options.incremental_column:
            staged.append(Step("scd2: count source rows", "data", render(source_count_sql(ctx))))
        staged.append(
            Step(
                "scd2: close changed versions"
                + (", close deleted keys" if options.handle_deletes else ""),
                "data",
                render(scd2_close_sql(ctx, handle_deletes=options.handle_deletes)),
            )
        )
        staged.append(
            Step(
                "scd2: insert new versions",
                "data",
                render(
                    scd2_insert_sql(
                        ctx,
                        handle_deletes=options.handle_deletes,
                        ttl=options.ttl,
                        future_valid_from=tfacts is None or tfacts.future_valid_from,
                    )
                ),
            )
        )
    if deferred:
        staged.append(
            Step(
                "check the deferred unique constraints",
                "setting",
                "SET CONSTRAINTS ALL IMMEDIATE",
                note="checked now, not at commit: a dry run sees a violation too",
            )
        )
    fallback: tuple[Step, ...] = ()
    if after_load is not None:
        steps.extend(_direct_load(options, ctx, stmt_path, after_load))
        fallback = tuple(replace(s_, kind="ddl") for s_ in after_load) + tuple(staged)
        decisions.append(
            Decision(
                "load",
                "direct",
                "the table is created by this run, so it holds no row: "
                + (
                    "the source rows go by binary COPY straight into it"
                    if stmt_path == "cross_db"
                    else "one INSERT … SELECT fills it"
                )
                + ", without a stage or an upsert; its keys and indexes are built after "
                "the load. If that load fails (a key twice, a value the column refuses), "
                "it is rolled back and the staged plan runs instead, so its checks name "
                "the row at fault",
            )
        )
    else:
        steps.extend(staged)
    return fallback


def _loads_directly(
    options: TargetOptions,
    tfacts: TargetFacts | None,
    steer: Steer,
    stmt_path: str,
    scols: tuple[SourceColumn, ...] | None,
    source_encoding: str | None,
) -> bool:
    """Whether the target is loaded straight in: it is created by this run (it provably
    holds no row; nobody else sees it before the commit). Not for a backfill window or
    an scd2 ``ttl`` (versions may be inserted expired): those keep the staged
    statements. Cross-DB, scd1 and scd2 compute the row hash in the source database, so
    only when both databases encode text alike (md5 hashes the encoded bytes)."""
    if tfacts is None or tfacts.reflected is not None or steer.window is not None:
        return False
    if options.mode == "scd2" and options.ttl is not None:
        return False
    if stmt_path == "cross_db":
        hashed = options.mode in ("scd1", "scd2")
        if scols is None or (hashed and source_encoding != tfacts.encoding):
            return False
    return True


def _direct_load(
    options: TargetOptions, ctx: SqlContext, stmt_path: str, after_load: list[Step]
) -> list[Step]:
    """The load straight into the new table, its keys and indexes, the new watermark."""
    mode = options.mode
    if stmt_path == "cross_db":
        out = [
            Step(
                "load: COPY source → empty target",
                "load",
                render(load_copy_out_sql(ctx, mode)) + ";\n" + render(load_copy_in_sql(ctx, mode)),
                note="binary COPY straight into the new table; the source casts to its types",
            )
        ]
    else:
        out = [
            Step(
                "load: insert into the empty target",
                "load",
                render(load_insert_sql(ctx, mode)),
                note="one INSERT … SELECT into the new table",
            )
        ]
    out.extend(after_load)
    if options.incremental_column:
        out.append(Step(LOADED_WATERMARK, "data", render(loaded_stats_sql(ctx))))
    return out


def decisions_reason(decisions: list[Decision], topic: str) -> str:
    for d in decisions:
        if d.topic == topic:
            return d.reason
    return ""


# --- cross-DB statements (typed from the source's result description) -----------------


def _stage_columns(
    ctx: SqlContext, scols: tuple[SourceColumn, ...] | None
) -> list[tuple[str, str, bool]]:
    """(name, stage type, travels as text) per declared column."""
    by_name = {c.name: c for c in scols or ()}
    out = []
    for col in ctx.declared:
        sc = by_name.get(col.name)
        if sc is None:
            out.append((col.name, "<type of the source column>", False))
        elif not sc.travels_as_text:
            out.append((col.name, sc.type, False))
        else:
            # A type of the source database only (enum, domain, …) or an OID alias
            # (regclass, …): send its text form, as the same-DB path would read it.
            out.append((col.name, "text", True))
    return out


def stage_sql(ctx: SqlContext, scols: tuple[SourceColumn, ...] | None) -> str:
    items = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))
        for n, t, _ in _stage_columns(ctx, scols)
    )
    return render(
        sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(sql.Identifier(STAGE), items)
    )


def copy_out_sql(ctx: SqlContext, scols: tuple[SourceColumn, ...] | None) -> str:
    items = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier("q", n)) if as_text else sql.Identifier("q", n)
        for n, _, as_text in _stage_columns(ctx, scols)
    )
    where = (
        ctx.watermark_where() if ctx.incremental_column and ctx.watermark_filter else sql.SQL("")
    )
    return render(
        sql.SQL("COPY (SELECT {} FROM (\n{}\n) AS q{}) TO STDOUT (FORMAT BINARY)").format(
            items, sql.SQL(ctx.source_sql), where
        )
    )


def copy_in_sql(ctx: SqlContext) -> str:
    return render(
        sql.SQL("COPY pg_temp.{} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(STAGE), sql.SQL(", ").join(map(sql.Identifier, ctx.names))
        )
    )
