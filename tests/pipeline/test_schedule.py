"""Schedules read on a time zone's wall clock (``timezone=``): validation at import,
the slots ``flow run-due`` computes, and the two daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import pytest

from ematix_flow import ematix, pipeline, pk
from ematix_flow._errors import DefinitionError
from ematix_flow._schedule import latest_slot, next_slot
from ematix_flow.types import BigInt


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "slot"),
    [
        # Paris is UTC+1 in March: 06:00 Paris is 05:00 UTC, not 06:00 UTC.
        ("2026-03-20 05:10", "2026-03-20 05:00"),
        ("2026-03-20 04:50", "2026-03-19 05:00"),
        # Spring forward (29 March 2026, 02:00 → 03:00): 02:30 does not exist that day,
        # the slot comes due at 03:00 CEST (01:00 UTC).
        ("2026-03-29 01:20", "2026-03-29 01:00"),
    ],
)
def test_the_slot_is_on_the_zone_s_wall_clock(now: str, slot: str) -> None:
    schedule = "0 6 * * *" if now.startswith("2026-03-20") else "30 2 * * *"
    assert latest_slot(schedule, "Europe/Paris", at(now)) == at(slot)


def test_a_wall_clock_time_passed_twice_is_one_slot() -> None:
    # Fall back (25 October 2026, 03:00 CEST → 02:00 CET): 02:30 happens at 00:30 UTC
    # and again at 01:30 UTC. The daily job's slot stays the first one.
    for now in ("2026-10-25 00:40", "2026-10-25 01:40", "2026-10-25 05:00"):
        assert latest_slot("30 2 * * *", "Europe/Paris", at(now)) == at("2026-10-25 00:30")
    assert next_slot("30 2 * * *", "Europe/Paris", at("2026-10-25 00:40")) == at("2026-10-26 01:30")
    # Every 30 minutes: the repeated hour is not run again; 03:00 CET comes next.
    assert latest_slot("*/30 * * * *", "Europe/Paris", at("2026-10-25 01:40")) == at(
        "2026-10-25 00:30"
    )
    assert next_slot("*/30 * * * *", "Europe/Paris", at("2026-10-25 00:40")) == at(
        "2026-10-25 02:00"
    )


def test_without_a_zone_the_schedule_is_read_in_utc() -> None:
    assert latest_slot("0 6 * * *", None, at("2026-03-20 05:10")) == at("2026-03-19 06:00")


@ematix.table(schema="wh")
class TzTarget:
    id: Annotated[BigInt, pk()]


@pytest.fixture
def table() -> type:
    return TzTarget


@pytest.mark.parametrize(
    ("timezone", "fragment"),
    [
        ("europe/paris", "did you mean 'Europe/Paris'?"),
        ("Mars/Olympus_Mons", "e.g. 'Europe/Paris'"),
        ("localtime", "is not an IANA time zone name"),
    ],
)
def test_an_unknown_zone_is_refused_at_import_naming_the_argument(
    table: type, names: list[str], timezone: str, fragment: str
) -> None:
    with pytest.raises(DefinitionError, match=r"pipeline tz_bad: timezone=") as declared:

        @ematix.pipeline(target=table, mode="merge", schedule="0 6 * * *", timezone=timezone)
        def tz_bad(conn):
            return "SELECT 1 AS id"

    assert fragment in str(declared.value)
    with pytest.raises(DefinitionError, match=r"timezone="):
        pipeline.register(name="tz_bad2", schedule="0 6 * * *", timezone=timezone)
    assert "tz_bad" not in pipeline.registry()


def test_a_zone_needs_a_schedule_and_is_recorded(table: type, names: list[str]) -> None:
    with pytest.raises(DefinitionError, match="no schedule="):
        pipeline.register(name="tz_alone", timezone="UTC")

    @ematix.pipeline(target=table, mode="merge", schedule="0 6 * * *", timezone="Asia/Tokyo")
    def tz_ok(conn):
        return "SELECT 1 AS id"

    names.append("tz_ok")
    assert pipeline.get("tz_ok").timezone == "Asia/Tokyo"
    assert pipeline.get("tz_ok").to_dict()["timezone"] == "Asia/Tokyo"
