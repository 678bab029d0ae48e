"""Schedules: a cron expression read on the wall clock of a time zone.

``pipeline.register(schedule=..., timezone=...)`` (and ``@ematix.pipeline``) validate
the zone here when the module is imported; ``flow run-due`` asks which slot came due
last; ``flow export-k8s`` writes the same zone as the CronJob's ``timeZone``::

    from datetime import UTC, datetime
    from ematix_flow._schedule import latest_slot

    latest_slot("30 2 * * *", "Europe/Paris", datetime.now(UTC))

A schedule without a zone is read in UTC. Around daylight-saving changes the rule is:

- clocks go forward: a slot inside the skipped hour comes due at the first minute
  after it (a daily ``30 2 * * *`` in Europe/Paris runs at 03:00 that day);
- clocks go back: a wall-clock time that happens twice is one slot, its first
  occurrence (the daily ``30 2 * * *`` runs once; a run every 30 minutes does not
  run again in the repeated hour, and the next slot after it catches up).
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, tzinfo
from functools import cache

from ematix_flow._errors import DefinitionError

__all__ = ["latest_slot", "next_slot", "validate_timezone", "zone"]


@cache
def _known_zones() -> frozenset[str]:
    # "localtime" is whatever the machine is set to: not the same on a laptop and a pod.
    return frozenset(zoneinfo.available_timezones() - {"localtime"})


def validate_timezone(timezone: object, where: str) -> str:
    """``timezone`` if it is an IANA time zone name, else a DefinitionError that names
    the argument and shows a valid spelling."""
    if isinstance(timezone, str) and timezone in _known_zones():
        return timezone
    hint = "e.g. 'Europe/Paris', 'America/New_York' or 'UTC'"
    if isinstance(timezone, str):
        same = [z for z in _known_zones() if z.lower() == timezone.strip().lower()]
        if same:
            hint = f"did you mean {sorted(same)[0]!r}?"
    raise DefinitionError(
        f"{where}: timezone={timezone!r} is not an IANA time zone name; {hint} "
        "(the schedule is read on that zone's wall clock)"
    )


def zone(timezone: str | None) -> tzinfo:
    """The zone a schedule is read in: ``timezone``, or UTC when it is not given."""
    return UTC if timezone is None else zoneinfo.ZoneInfo(timezone)


def _repeated(t: datetime) -> bool:
    """True for the second occurrence of a wall-clock time the clocks went back over."""
    return t.fold == 1 and t.replace(fold=0).utcoffset() != t.utcoffset()


def latest_slot(schedule: str, timezone: str | None, now: datetime) -> datetime:
    """The most recent slot of ``schedule`` before ``now``, in UTC."""
    return _slot(schedule, timezone, now, forward=False)


def next_slot(schedule: str, timezone: str | None, now: datetime) -> datetime:
    """The first slot of ``schedule`` after ``now``, in UTC."""
    return _slot(schedule, timezone, now, forward=True)


def _slot(schedule: str, timezone: str | None, now: datetime, *, forward: bool) -> datetime:
    from croniter import croniter

    slots = croniter(schedule, now.astimezone(zone(timezone)))
    step = slots.get_next if forward else slots.get_prev
    while True:
        slot = step(datetime)
        if not _repeated(slot):
            # in UTC: an aware time in a repeated hour never compares equal across zones
            return slot.astimezone(UTC)
