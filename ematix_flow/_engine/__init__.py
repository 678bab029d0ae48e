"""The sync engine: ``plan()`` builds a :class:`Plan` (plain data: SQL steps and every
decision with its reason), ``execute()`` runs it in one transaction per target.

Module map (one concept each):

- :mod:`.options` — ``TargetOptions``, the validated per-target choices;
- :mod:`.keys` — merge-key resolution (spec §3.2) with reasons;
- :mod:`.framework` — framework columns and the physical table (SCD2 keys);
- :mod:`.sql_common`, :mod:`.sql_append`, :mod:`.sql_merge` (merge, scd1),
  :mod:`.sql_scd2` — the set-based statements of each mode;
- :mod:`.inspect` — facts read from the databases (target table, indexes, watermark,
  source columns);
- :mod:`.plan` — ``plan()`` / ``build_plan()`` and the ``Plan`` data;
- :mod:`.copy` — the cross-DB binary COPY pipe;
- :mod:`.state` — run history, watermarks, state schema versioning;
- :mod:`.explain` — driver errors turned into actionable ones;
- :mod:`.execute` — ``execute()`` and ``TargetResult``.

Called by :mod:`ematix_flow.pipeline`; never imports a front end.
"""

from __future__ import annotations

from ematix_flow._engine.execute import StepResult, TargetResult, execute
from ematix_flow._engine.options import TargetOptions
from ematix_flow._engine.plan import Decision, Plan, Problem, Step, build_plan, plan

__all__ = [
    "Decision",
    "Plan",
    "Problem",
    "Step",
    "StepResult",
    "TargetOptions",
    "TargetResult",
    "build_plan",
    "execute",
    "plan",
]
