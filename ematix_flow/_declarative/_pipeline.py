"""``@ematix.pipeline``: a function returning its source, wired to targets and a schedule.

Example (spec §2)::

    @ematix.pipeline(
        target=CustomerDim,
        schedule="0 * * * *",
        mode="scd2",
        event_timestamp_column="last_seen",
    )
    def customer_sync(conn):
        return "SELECT id AS customer_id, email, name, last_seen FROM source.users"

    customer_sync()            # run now → RunReport
    customer_sync.preview()    # the plan, nothing executed
    customer_sync.dry_run()    # executed in a transaction, rolled back

The decorator checks everything it can at import time (targets, options, keys,
signature, ``source_table``) and records a frozen :class:`PipelineSpec`; it then
registers a body with :func:`ematix_flow.pipeline.register`, so ``flow list / run /
run-due / history / preview / dry-run`` see the pipeline like any imperative one. That
body is all the decorator adds at run time: it resolves the connection names through
:func:`ematix_flow.config.connect` (at run time, never at import), calls the user's
function once per target (the source is re-run per target, spec §3.4), turns what it
returned into a :class:`~ematix_flow.source.Source`, and calls
:func:`ematix_flow.pipeline.sync` once per target — one transaction each.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any

from ematix_flow._declarative._options import (
    NOT_GIVEN,
    is_given,
    normalize_option,
    resolve_options,
)
from ematix_flow._declarative._target import Target
from ematix_flow._errors import DefinitionError
from ematix_flow.table import ManagedTable

if TYPE_CHECKING:
    from ematix_flow.source import Source


def _api() -> ModuleType:
    """``ematix_flow.pipeline``, imported when a pipeline is declared or run.

    Not at import of ``ematix_flow``: the engine pulls in psycopg, and ``import
    ematix_flow`` / ``flow --help`` must stay fast.
    """
    return importlib.import_module("ematix_flow.pipeline")


__all__ = ["DeclaredPipeline", "PipelineSpec", "ResolvedTarget", "pipeline"]

KEYED_MODES = ("merge", "scd1", "scd2")


@dataclass(frozen=True)
class ResolvedTarget:
    """One target with every option resolved (target → pipeline → table defaults)."""

    table: type[ManagedTable]
    #: The connection name this target is written through.
    connection: str
    #: The options passed to ``pipeline.sync``; absent ones are the engine's defaults.
    options: Mapping[str, Any]
    #: The merge keys the engine will use and where they come from (``None`` for append).
    keys: tuple[str, ...] | None = None
    keys_origin: str | None = None

    @property
    def mode(self) -> str:
        return str(self.options["mode"])

    @property
    def qualified_name(self) -> str:
        return self.table.__table_spec__.qualified_name


@dataclass(frozen=True)
class PipelineSpec:
    """Everything ``@ematix.pipeline`` decided at import time."""

    name: str
    schedule: str | None
    targets: tuple[ResolvedTarget, ...]
    #: ``None`` when the source is read through the pipeline's ``target_connection``.
    source_connection: str | None
    target_connection: str
    source_table: str | None
    column_map: Mapping[str, str] | None
    force_path: str | None
    continue_on_failure: bool
    #: 0: no parameter (source_table=); 1: ``(conn)``; 2: ``(src_conn, tgt_conn)``.
    arity: int
    is_async: bool
    #: IANA zone whose wall clock the schedule is read on (``None``: UTC).
    timezone: str | None = None

    @property
    def source_connection_name(self) -> str:
        """The connection the source is read from."""
        return self.source_connection or self.target_connection

    @property
    def connections(self) -> tuple[str, ...]:
        """Every connection name the pipeline uses, source first, without repeats."""
        names = [self.source_connection_name, *(t.connection for t in self.targets)]
        return tuple(dict.fromkeys(names))


def pipeline(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    target: type[ManagedTable] | Target | None = None,
    targets: Sequence[Target | type[ManagedTable]] | None = None,
    schedule: str | None = None,
    timezone: str | None = None,
    mode: Any = NOT_GIVEN,
    event_timestamp_column: Any = NOT_GIVEN,
    ttl: Any = NOT_GIVEN,
    handle_deletes: Any = NOT_GIVEN,
    keys: Any = NOT_GIVEN,
    compare_columns: Any = NOT_GIVEN,
    update_columns: Any = NOT_GIVEN,
    incremental_column: Any = NOT_GIVEN,
    incremental_lookback: Any = NOT_GIVEN,
    lock_timeout: Any = NOT_GIVEN,
    statement_timeout: Any = NOT_GIVEN,
    source_connection: str | None = None,
    target_connection: str = "warehouse",
    source_table: str | None = None,
    column_map: Mapping[str, str] | None = None,
    force_path: str | None = None,
    continue_on_failure: bool = False,
    name: str | None = None,
) -> Callable[[Callable[..., Any]], DeclaredPipeline]:
    """Declare a pipeline: its targets, its source (the function) and its schedule.

    Per-target options (``mode=``, ``keys=``, ``compare_columns=``, ``update_columns=``,
    ``event_timestamp_column=``, ``ttl=``, ``handle_deletes=``, ``incremental_column=``,
    ``incremental_lookback=``, ``lock_timeout=``, ``statement_timeout=``) resolve per option:
    ``ematix.target(...)`` → this decorator → the table's ``@ematix.table(...)``
    defaults → the engine's default. An option left out falls
    through; ``None`` is a value (``handle_deletes=None`` switches a table's
    ``handle_deletes="hard"`` off).

    The function takes no parameter (only with ``source_table=``), one ``conn`` (the
    source is read where the target lives, unless ``source_connection=`` says
    otherwise) or two, ``(src_conn, tgt_conn)`` (cross-DB; needs ``source_connection=``).
    It returns a SQL string, a ``Source``, the dict of its own ``pipeline.sync(...)``,
    or ``None`` to read ``source_table=``. ``async def`` functions are run with
    ``asyncio.run``.

    ``schedule=`` (five cron fields) is read on the wall clock of ``timezone=``, an IANA
    name such as ``"Europe/Paris"`` (UTC when left out), by ``flow run-due`` and by the
    CronJob of ``flow export-k8s``.

    Example::

        @ematix.pipeline(target=Customer, source_table="public.users",
                         column_map={"customer_id": "id"}, mode="merge")
        def sync_customers():
            pass
    """
    if fn is not None:
        what = getattr(fn, "__name__", repr(fn))
        raise DefinitionError(
            f"@ematix.pipeline must be called with its target: write "
            f"@ematix.pipeline(target=MyTable, ...) above def {what}, not bare @ematix.pipeline"
        )
    pipeline_kwargs = {
        "mode": mode,
        "event_timestamp_column": event_timestamp_column,
        "ttl": ttl,
        "handle_deletes": handle_deletes,
        "keys": keys,
        "compare_columns": compare_columns,
        "update_columns": update_columns,
        "incremental_column": incremental_column,
        "incremental_lookback": incremental_lookback,
        "lock_timeout": lock_timeout,
        "statement_timeout": statement_timeout,
    }

    def decorate(func: Callable[..., Any]) -> DeclaredPipeline:
        spec = _build_spec(
            func,
            name=name,
            target=target,
            targets=targets,
            schedule=schedule,
            timezone=timezone,
            options={k: v for k, v in pipeline_kwargs.items() if is_given(k, v)},
            source_connection=source_connection,
            target_connection=target_connection,
            source_table=source_table,
            column_map=column_map,
            force_path=force_path,
            continue_on_failure=continue_on_failure,
        )
        return DeclaredPipeline(func, spec)

    return decorate


def _build_spec(
    func: Callable[..., Any],
    *,
    name: str | None,
    target: Any,
    targets: Any,
    schedule: str | None,
    timezone: str | None,
    options: dict[str, Any],
    source_connection: str | None,
    target_connection: str,
    source_table: str | None,
    column_map: Mapping[str, str] | None,
    force_path: str | None,
    continue_on_failure: bool,
) -> PipelineSpec:
    from ematix_flow._engine.keys import resolve_keys
    from ematix_flow._engine.options import PATHS, TargetOptions
    from ematix_flow.source import parse_table_name

    if not callable(func):
        raise DefinitionError(f"@ematix.pipeline decorates a function, not {func!r}")
    fn_name = getattr(func, "__name__", None)
    pname = name if name is not None else fn_name
    if not isinstance(pname, str) or not pname:
        raise DefinitionError(f"@ematix.pipeline: name= must be a non-empty string, got {pname!r}")
    where = f"pipeline {pname}"
    _check_connection_name(where, "target_connection", target_connection)
    if source_connection is not None:
        _check_connection_name(where, "source_connection", source_connection)
    if not isinstance(continue_on_failure, bool):
        raise DefinitionError(
            f"{where}: continue_on_failure= must be True or False, got {continue_on_failure!r}"
        )
    if force_path is not None and force_path not in PATHS:
        raise DefinitionError(
            f"{where}: force_path={force_path!r} is not valid; use "
            f"{' or '.join(repr(p) for p in PATHS)} (or leave it out to decide from the "
            "connections)"
        )
    if source_table is not None:
        parse_table_name(source_table)  # "source_table requires schema.table format"
    if column_map is not None:
        if source_table is None:
            raise DefinitionError(
                f"{where}: column_map= renames the columns of source_table=, which is not "
                'set; pass source_table="schema.table" or write the renames (AS) in the SQL '
                "the function returns"
            )
        if not isinstance(column_map, Mapping):
            raise DefinitionError(
                f"{where}: column_map= must be a dict of target column → source column, "
                f"got {column_map!r}"
            )
        column_map = MappingProxyType(dict(column_map))

    declared = _declared_targets(where, target, targets)
    resolved: list[ResolvedTarget] = []
    seen: set[tuple[str, str]] = set()
    for tgt in declared:
        spec = tgt.table.__table_spec__
        twhere = f"{where}, target {spec.qualified_name}"
        connection = tgt.target_connection or target_connection
        if (connection, spec.qualified_name) in seen:
            raise DefinitionError(
                f"{where}: target {spec.qualified_name} on connection {connection!r} is "
                "listed twice; list each target once"
            )
        seen.add((connection, spec.qualified_name))
        opts = {
            key: normalize_option(key, value, where=twhere, columns=spec.column_names)
            for key, value in resolve_options(
                tgt.options(), options, tgt.table.__table_options__
            ).items()
        }
        if "mode" not in opts:
            raise DefinitionError(
                f'{twhere}: no mode; pass mode="merge" (or append, scd1, scd2) to '
                "@ematix.pipeline or ematix.target, or declare it on the table with "
                "@ematix.table(..., mode=...)"
            )
        # The engine's own validation, run now so a wrong combination fails at import.
        TargetOptions(table=spec, force_path=force_path, **opts)
        resolved_keys = None
        if opts["mode"] in KEYED_MODES:
            resolved_keys = resolve_keys(
                spec,
                opts.get("keys"),
                pipeline=pname,
                mode=opts["mode"],
                keys_argument_of="ematix.target(...)" if targets else "@ematix.pipeline(...)",
            )
        if column_map is not None:
            unknown = [c for c in column_map if c not in spec.column_names]
            if unknown:
                raise DefinitionError(
                    f"{twhere}: column_map= maps {', '.join(map(repr, unknown))}, which the "
                    f"target does not declare; its columns are {', '.join(spec.column_names)}"
                )
        resolved.append(
            ResolvedTarget(
                tgt.table,
                connection,
                MappingProxyType(opts),
                keys=resolved_keys.columns if resolved_keys else None,
                keys_origin=resolved_keys.origin if resolved_keys else None,
            )
        )

    arity, is_async = _inspect_function(where, func)
    if arity == 0 and source_table is None:
        raise DefinitionError(
            f"{where}: {fn_name}() takes no connection parameter, so its source must come "
            'from source_table="schema.table"; pass source_table=, or take a conn parameter '
            "and return the SQL to read"
        )
    if arity == 2 and source_connection is None:
        raise DefinitionError(
            f"{where}: {fn_name}(src_conn, tgt_conn) reads from a second database, but "
            'source_connection= is not set; pass source_connection="oltp" (a configured '
            "connection name), or take a single conn parameter to read where the target lives"
        )
    return PipelineSpec(
        name=pname,
        schedule=schedule,
        targets=tuple(resolved),
        source_connection=source_connection,
        target_connection=target_connection,
        source_table=source_table,
        column_map=column_map,
        force_path=force_path,
        continue_on_failure=continue_on_failure,
        arity=arity,
        is_async=is_async,
        timezone=timezone,
    )


def _check_connection_name(where: str, what: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise DefinitionError(
            f"{where}: {what}= takes the name of a configured connection, e.g. "
            f'{what}="warehouse", got {value!r} (URLs belong in the connection registry: '
            "EMATIX_FLOW_DSN_<NAME> or .ematix-flow.toml)"
        )


def _declared_targets(where: str, target: Any, targets: Any) -> list[Target]:
    if (target is None) == (targets is None):
        raise DefinitionError(
            f"{where}: pass exactly one of target=MyTable or targets=[ematix.target(...), ...]"
        )
    items = [target] if target is not None else targets
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items:
        raise DefinitionError(
            f"{where}: targets= must be a non-empty list of ematix.target(...) entries, "
            f"got {targets!r}"
        )
    out: list[Target] = []
    for item in items:
        if isinstance(item, Target):
            out.append(item)
        elif isinstance(item, type) and issubclass(item, ManagedTable) and item is not ManagedTable:
            out.append(Target(item))
        else:
            raise DefinitionError(
                f"{where}: {item!r} is not a target; use a class decorated with "
                "@ematix.table (or a ManagedTable subclass), or ematix.target(MyTable, mode=...)"
            )
    return out


def _inspect_function(where: str, func: Callable[..., Any]) -> tuple[int, bool]:
    try:
        signature = inspect.signature(func, eval_str=True)
    except (NameError, SyntaxError, TypeError, ValueError) as exc:
        raise DefinitionError(f"{where}: cannot read the function's signature ({exc})") from exc
    params = list(signature.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(params) > 2 or any(p.kind not in positional for p in params):
        shown = f"{getattr(func, '__name__', 'f')}{signature}"
        raise DefinitionError(
            f"{where}: {shown} has an unsupported signature; a pipeline function takes "
            "() with source_table=, (conn) for one connection, or (src_conn, tgt_conn) for "
            "a cross-DB pipeline"
        )
    return len(params), inspect.iscoroutinefunction(func)


class DeclaredPipeline:
    """What ``@ematix.pipeline`` returns: call it to run, or ``.preview()`` / ``.dry_run()``.

    ``.name`` is the registered name, ``.spec`` the frozen :class:`PipelineSpec`; the
    decorated function stays reachable as ``__wrapped__``.
    """

    def __init__(self, func: Callable[..., Any], spec: PipelineSpec) -> None:
        functools.update_wrapper(self, func)
        self._func = func
        self.spec = spec
        self.name = spec.name

        def body() -> Any:
            return self._fire()

        body.__name__ = spec.name
        body.__qualname__ = getattr(func, "__qualname__", spec.name)
        body.__module__ = getattr(func, "__module__", __name__)
        body.__doc__ = func.__doc__
        api = _api()
        self.registered = api.register(
            name=spec.name,
            schedule=spec.schedule,
            timezone=spec.timezone,
            targets=tuple(_target_info(api, t) for t in spec.targets),
            connections=spec.connections,
            continue_on_failure=spec.continue_on_failure,
        )(body)

    def __call__(self) -> Any:
        """Run the pipeline now (every target, committed) and return its RunReport."""
        return _api().run(self.name)

    def preview(self) -> Any:
        """Build every target's plan without executing anything (spec §3.5)."""
        return _api().preview(self.name)

    def dry_run(self) -> Any:
        """Execute every target's plan inside a transaction and roll it back (spec §3.5)."""
        return _api().dry_run(self.name)

    def state(self, *, target: str | None = None) -> list[Any]:
        """What is stored for each target: watermark, last run, last success, counts."""
        return _api().state(self.name, target=target)

    def reset_state(
        self, *, target: str | None = None, to: str | None = None, preview: bool = False
    ) -> list[Any]:
        """Clear or set each target's watermark (see ``pipeline.reset_state``)."""
        return _api().reset_state(self.name, target=target, to=to, preview=preview)

    def backfill(
        self,
        start: Any,
        end: Any,
        *,
        step: Any = None,
        target: str | None = None,
        preview: bool = False,
        dry_run: bool = False,
    ) -> list[Any]:
        """Reprocess ``start <= incremental_column < end`` in steps (see
        ``pipeline.backfill``); one RunReport per window."""
        return _api().backfill(
            self.name, start, end, step=step, target=target, preview=preview, dry_run=dry_run
        )

    def __repr__(self) -> str:
        targets = ", ".join(t.qualified_name for t in self.spec.targets)
        return f"<pipeline {self.name} → {targets}>"

    # -- what runs when the registry fires the pipeline --------------------------------

    def _fire(self) -> list[Any]:
        """Sync every target in order; one ``pipeline.sync`` (one transaction) each."""
        spec = self.spec
        keep_going = spec.continue_on_failure or _api().current_action() != "run"
        connections: dict[str, Any] = {}

        def connection(name: str) -> Any:
            if name not in connections:
                from ematix_flow.config import connect

                connections[name] = connect(name)
            return connections[name]

        results: list[Any] = []
        first_error: BaseException | None = None
        shared, source, error = self._shared_source(connection, results)
        start = len(results)
        with shared if shared is not None else contextlib.nullcontext():
            for i, tgt in enumerate(spec.targets[start:], start):
                try:
                    if error is not None and i == start:
                        raise error  # the function, called once for the run, failed
                    results.append(self._sync_target(tgt, connection, source))
                except Exception as exc:
                    if not keep_going:
                        self._not_run(spec.targets[i + 1 :], failed=tgt, connection=connection)
                        raise
                    first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results

    def _shared_source(
        self, connection: Callable[[str], Any], results: list[Any]
    ) -> tuple[Any, Any, Exception | None]:
        """Several targets and a function that does not take the target connection: the
        source is the same for every target, so it is evaluated once and read once per
        run (``pipeline._shared_source``). The function is called here, once; if it
        ran its own ``pipeline.sync`` (returned its dict), that was the first target,
        and the rest run as before. If it raised, that is the first target's failure
        (the third item), as if it had been called for that target."""
        spec = self.spec
        if len(spec.targets) < 2 or spec.arity == 2:
            return None, None, None
        try:
            src = connection(spec.source_connection_name)
            returned = self._call(*((src,) if spec.arity == 1 else ()))
            if isinstance(returned, dict):
                results.append(returned)
                return None, None, None
            source = self._source(returned, src)
        except Exception as exc:
            return None, None, exc
        try:
            syncs = [(t.table, connection(t.connection), dict(t.options)) for t in spec.targets]
        except Exception:
            # the targets run one by one, and the one whose connection fails reports it
            return None, source, None
        return _api()._shared_source(source, syncs, spec.force_path), source, None

    def _not_run(
        self,
        rest: Sequence[ResolvedTarget],
        *,
        failed: ResolvedTarget,
        connection: Callable[[str], Any],
    ) -> None:
        """The targets after a failed one, when the pipeline halts: each gets its own
        ``not_run`` result and history row, naming the target that stopped the run."""
        failed_name = failed.qualified_name
        for tgt in rest:
            try:
                conn = connection(tgt.connection)
            except Exception:  # an unknown connection: the report still lists the target
                conn = tgt.connection
            _api().not_run(
                target=tgt.table,
                target_connection=conn,
                mode=tgt.mode,
                reason=(
                    f"not run: target {failed_name} failed before it, and the pipeline "
                    "stops at the first failure (continue_on_failure=True runs the rest)"
                ),
            )

    def _sync_target(
        self, tgt: ResolvedTarget, connection: Callable[[str], Any], source: Any = None
    ) -> Any:
        spec = self.spec
        src = connection(spec.source_connection_name)
        dst = connection(tgt.connection)
        if source is None:
            args = {0: (), 1: (src,), 2: (src, dst)}[spec.arity]
            returned = self._call(*args)
            if isinstance(returned, dict):
                return returned  # the function ran its own pipeline.sync
            source = self._source(returned, src)
        return _api().sync(
            target=tgt.table,
            source=source,
            target_connection=dst,
            force_path=spec.force_path,
            **tgt.options,
        )

    def _call(self, *args: Any) -> Any:
        if not self.spec.is_async:
            return self._func(*args)
        import asyncio
        import concurrent.futures
        import contextvars

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._func(*args))
        # Called from inside a running event loop: asyncio.run needs a thread of its own,
        # which must see this run's context (the action and report pipeline.sync reads).
        context = contextvars.copy_context()
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(context.run, asyncio.run, self._func(*args)).result()

    def _source(self, returned: Any, src: Any) -> Source:
        from ematix_flow.source import Source

        spec = self.spec
        if isinstance(returned, Source):
            return returned
        if isinstance(returned, str):
            return Source.postgres_query(src, returned)
        if returned is None:
            if spec.source_table is not None:
                return Source.postgres_table(src, spec.source_table, column_map=spec.column_map)
            raise DefinitionError(
                f"pipeline {spec.name} has no source declaration: "
                f"{self._func.__name__}() returned None and no source_table= is set. Return "
                'the SQL to read (a string) or a Source, or pass source_table="schema.table"'
            )
        raise DefinitionError(
            f"pipeline {spec.name}: {self._func.__name__}() returned "
            f"{type(returned).__name__}; return a SQL string, a Source, the dict of your own "
            "pipeline.sync(...), or None together with source_table="
        )


def _target_info(api: Any, t: ResolvedTarget) -> Any:
    """The registry's record of a target, with its incremental column and that
    column's comparison type (state actions parse watermarks in it)."""
    from ematix_flow._engine.sql_common import cast_type

    inc = t.options.get("incremental_column")
    spec = t.table.__table_spec__
    return api.TargetInfo(
        t.qualified_name,
        t.mode,
        t.keys,
        t.connection,
        incremental_column=inc,
        incremental_type=cast_type(spec.column(inc)) if inc else None,
    )
