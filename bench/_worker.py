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


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from ematix_flow import _core, pipeline
    from ematix_flow.source import Source

    target = items_table(spec["table"])
    source = Source.postgres_query(_core.connect(spec["source_url"]), spec["query"])
    tgt = _core.connect(spec["target_url"])
    name = f"bench_{spec['table']}"

    @pipeline.register(name=name)
    def bench_pipeline() -> dict[str, Any]:
        return pipeline.sync(
            target=target, source=source, target_connection=tgt, mode=spec["mode"], keys=("id",)
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
    (outcome,) = report.results
    return {
        "seconds": seconds,
        "result": json.loads(json.dumps(outcome.summary(), default=str)),
        "steps": [[step.label, step.duration_s] for step in outcome.steps],
        "rss_start_kib": rss_start,
        "rss_peak_kib": _status_kib("VmHWM"),
    }


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
