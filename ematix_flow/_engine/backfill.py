"""The windows of a backfill: ``[start, end)`` cut into steps.

Bounds are dates, timestamps (ISO text, ``date`` or ``datetime``) or numbers; a step
is a ``timedelta``, a duration such as ``"1d"``, ``"6h"``, ``"30m"``, ``"45s"``,
``"1w"``, or a number for numeric bounds. The windows are returned as text in ISO
form, which PostgreSQL reads the same in every session (they are pinned), and are cast
to each target's incremental column type there.

Example::

    >>> windows("2026-01-01", "2026-01-03", "1d")
    [('2026-01-01 00:00:00', '2026-01-02 00:00:00'), ('2026-01-02 00:00:00', '2026-01-03 00:00:00')]
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from ematix_flow._errors import DefinitionError

__all__ = ["parse_step", "windows"]

_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
#: More windows than this is almost certainly a wrong step: refuse rather than run for ever.
MAX_WINDOWS = 100_000


def parse_step(step: Any) -> timedelta | Decimal | None:
    if step is None or isinstance(step, timedelta):
        return step
    if isinstance(step, (int, float, Decimal)) and not isinstance(step, bool):
        return Decimal(str(step))
    if isinstance(step, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([wdhms])\s*", step)
        if m:
            return timedelta(**{_UNITS[m[2]]: float(m[1])})
        try:
            return Decimal(step.strip())
        except InvalidOperation:
            pass
    raise DefinitionError(
        f"backfill step {step!r} is not a duration (e.g. '1d', '6h', '30m') or a number"
    )


def _bound(value: Any) -> datetime | Decimal:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return Decimal(str(value))
    if isinstance(value, str):
        text = value.strip()
        try:
            return Decimal(text)
        except InvalidOperation:
            pass
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    raise DefinitionError(
        f"backfill bound {value!r} is not a date, a timestamp (ISO, e.g. 2026-01-01 or "
        "2026-01-01T06:00:00+00:00) or a number"
    )


def _text(value: datetime | Decimal) -> str:
    return value.isoformat(sep=" ") if isinstance(value, datetime) else str(value)


def windows(start: Any, end: Any, step: Any = None) -> list[tuple[str, str]]:
    """``[start, end)`` as consecutive ``(lo, hi)`` windows of ``step``."""
    lo, hi = _bound(start), _bound(end)
    if type(lo) is not type(hi) or (
        isinstance(lo, datetime) and (lo.tzinfo is None) != (hi.tzinfo is None)  # type: ignore[union-attr]
    ):
        raise DefinitionError(
            f"backfill bounds {start!r} and {end!r} are not of one kind (both dates/"
            "timestamps with or without a zone, or both numbers)"
        )
    if not lo < hi:  # type: ignore[operator]
        raise DefinitionError(
            f"backfill window is empty: --from {start!r} is not before --to {end!r}"
        )
    size = parse_step(step)
    if size is None:
        return [(_text(lo), _text(hi))]
    if isinstance(lo, datetime) != isinstance(size, timedelta) or not size:
        kind = "a duration such as '1d'" if isinstance(lo, datetime) else "a positive number"
        raise DefinitionError(f"backfill step {step!r} does not fit the bounds: use {kind}")
    if (isinstance(size, timedelta) and size <= timedelta(0)) or (
        isinstance(size, Decimal) and size <= 0
    ):
        raise DefinitionError(f"backfill step {step!r} must be positive")
    out = []
    cur = lo
    while cur < hi:  # type: ignore[operator]
        nxt = min(cur + size, hi)  # type: ignore[operator]
        out.append((_text(cur), _text(nxt)))
        cur = nxt
        if len(out) > MAX_WINDOWS:
            raise DefinitionError(
                f"backfill from {start!r} to {end!r} in steps of {step!r} makes more than "
                f"{MAX_WINDOWS:,} windows; use a larger step"
            )
    return out
