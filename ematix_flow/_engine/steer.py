"""Steering a run's state: a full refresh, a backfill window, a watermark override.

A :class:`Steer` travels with a run from the pipelines layer to :func:`plan` and
:func:`execute` and changes what the planner reads from the stored state, never how
the data statements work: the same plan, previewed and executed the same way.

- ``full_refresh``: the stored watermark is ignored and every row of the target is
  deleted first, in the run's own transaction (readers see the old rows until it
  commits); scd2 needs ``discard_history``.
- ``window`` (backfill): the source is read for ``lo <= incremental_column < hi``; the
  stored watermark moves only when the window passes it.
- ``watermark`` (a reset's preview): plan as if this value (or none) were stored.

Example::

    Steer(action="backfill", window=("2026-01-01", "2026-01-02"))
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KEEP", "Steer"]

#: ``Steer.watermark`` when the stored watermark is used as it is.
KEEP = "\x00keep"


@dataclass(frozen=True)
class Steer:
    #: What the history row records: run | full_refresh | backfill
    action: str = "run"
    #: Only these targets (``schema.table``); the others are left alone.
    targets: frozenset[str] | None = None
    discard_history: bool = False
    #: Plan as if this watermark were stored (``None``: none); :data:`KEEP`: as stored.
    watermark: str | None = KEEP
    #: Backfill: ``(lo, hi)`` as text of the incremental column's type.
    window: tuple[str, str] | None = None

    @property
    def full_refresh(self) -> bool:
        return self.action == "full_refresh"

    def applies_to(self, target: str) -> bool:
        return self.targets is None or target in self.targets
