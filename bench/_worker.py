"""One engine operation in a fresh process, so its peak RSS is its own.

Run by the bench as ``python -m bench._worker '<json>'``; prints one JSON line:
``{"seconds": …, "result": {…}, "steps": [[label, seconds], …], "rss_start_kib": …,
"rss_peak_kib": …}``. The sync runs as a registered pipeline (``pipeline.run``) so the
engine's per-step timings are available. ``seconds`` is measured around that run alone
(interpreter start-up and imports are not the engine's work); the RSS figures are the
process's ``VmRSS`` before the run and its ``VmHWM`` (peak) after it, from
``/proc/self/status``.

JSON fields: ``mode`` (merge|scd2), ``source_url``, ``target_url``, ``table`` (target
table name in schema ``bench``), ``query`` (source SQL), ``profile`` (optional path:
write a cProfile dump of the sync there).

With ``targets`` (a list of ``{"table", "mode", "incremental_column"?}``) instead of
``mode``/``table``, the run is one declarative pipeline, ``@ematix.pipeline(targets=[…])``
named ``pipeline``, whose function ``(conn)`` returns ``query`` to read through the
connection ``bench_source``, writing through ``bench_target`` (``EMATIX_FLOW_DSN_*``
set to the two URLs): the fan-out scenario. Its line then carries ``targets``: per
target ``table``, ``result``, ``steps`` and ``source_read`` (how its plan read the
source — the run's shared stage, its own stage… — and why).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def items_table(table: str) -> type:
    """The engine-side declaration of the bench table (schema ``bench``)."""
    from ematix_flow.table import ManagedTable
    from ematix_flow.types import BigInt, Boolean, Column, Numeric, Text, TimestampTZ

    attrs: dict[str, Any] = {
        "__schema__": "bench",
        "__tablename__": table,
        "id": Column(BigInt(), nullable=False, primary_key=True),
        "name": Column(Text(), nullable=False),
        "category": Column(Text()),
        "amount": Column(Numeric(12, 2)),
        "active": Column(Boolean()),
        "updated_at": Column(TimestampTZ()),
    }
    return type("BenchItems", (ManagedTable,), attrs)


def _source_read(outcome: Any) -> list[str] | None:
    """How the target read its source, as its plan decided: the ``source_read``
    decision's value and reason, if the plan records that decision."""
    plan = outcome.plan
    for d in plan.decisions if plan is not None else ():
        if d.topic == "source_read":
            return [str(d.value), str(d.reason)]
    return None


def declare_fan_out(spec: dict[str, Any]) -> str:
    """Declare the fan-out pipeline of ``spec`` (see the module docstring); its name."""
    import os

    from ematix_flow import ematix

    os.environ["EMATIX_FLOW_DSN_BENCH_SOURCE"] = spec["source_url"]
    os.environ["EMATIX_FLOW_DSN_BENCH_TARGET"] = spec["target_url"]
    targets = []
    for t in spec["targets"]:
        options: dict[str, Any] = {"mode": t["mode"]}
        if t["mode"] != "append":
            options["keys"] = ("id",)
        if t.get("incremental_column"):
            options["incremental_column"] = t["incremental_column"]
        targets.append(ematix.target(items_table(t["table"]), **options))
    query = spec["query"]

    # One parameter: the source is read through source_connection, and is the same
    # for every target (a function taking (src_conn, tgt_conn) may build a different
    # source per target connection, so its source is evaluated per target).
    @ematix.pipeline(
        targets=targets,
        source_connection="bench_source",
        target_connection="bench_target",
        name=spec["pipeline"],
    )
    def fan_out(conn: Any) -> str:
        return query

    return fan_out.name


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from ematix_flow import _core, pipeline
    from ematix_flow.source import Source

    if "targets" in spec:
        name = declare_fan_out(spec)
    else:
        target = items_table(spec["table"])
        source = Source.postgres_query(_core.connect(spec["source_url"]), spec["query"])
        tgt = _core.connect(spec["target_url"])
        name = f"bench_{spec['table']}"

        @pipeline.register(name=name)
        def bench_pipeline() -> dict[str, Any]:
            return pipeline.sync(
                target=target,
                source=source,
                target_connection=tgt,
                mode=spec["mode"],
                keys=("id",),
            )

    rss_start = _status_kib("VmRSS")
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    report = pipeline.run(name)
    seconds = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(spec["profile"])
    if not report.ok:
        errors = [report.error, *(r.error for r in report.results)]
        raise SystemExit(f"engine run failed: {'; '.join(e for e in errors if e)}")
    outcomes = [
        {
            "table": outcome.target,
            "result": json.loads(json.dumps(outcome.summary(), default=str)),
            "steps": [[step.label, step.duration_s] for step in outcome.steps],
            "source_read": _source_read(outcome),
        }
        for outcome in report.results
    ]
    out: dict[str, Any] = {
        "seconds": seconds,
        "rss_start_kib": rss_start,
        "rss_peak_kib": _status_kib("VmHWM"),
    }
    if "targets" in spec:
        out["targets"] = outcomes
    else:
        (one,) = outcomes
        out.update(result=one["result"], steps=one["steps"])
    return out


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
