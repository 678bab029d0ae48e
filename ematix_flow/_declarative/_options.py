"""The per-target sync options shared by ``@ematix.table``, ``ematix.target`` and
``@ematix.pipeline``, validated once, here, at decoration time.

The same option may be given at three levels; the most specific one wins (spec §3,
§5): ``ematix.target(...)`` → ``@ematix.pipeline(...)`` → ``@ematix.table(...)``
defaults → the engine's own default (the option is then not passed at all).
"Not given" is the sentinel :data:`NOT_GIVEN` (the default of every option keyword),
as it is for :func:`ematix_flow.pipeline.sync`. ``None`` is a real value that wins like
any other, so a pipeline can switch a table default *off*: ``handle_deletes=None`` over
``@ematix.table(handle_deletes="hard")`` keeps rows. ``mode`` has no "off", so
``mode=None`` counts as not given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any, Final

from ematix_flow._errors import DefinitionError
from ematix_flow._option_keywords import NOT_GIVEN, OPTION_NAMES, NotGiven

__all__ = [
    "HANDLE_DELETES",
    "MODES",
    "NOT_GIVEN",
    "OPTION_NAMES",
    "NotGiven",
    "check_combination",
    "is_given",
    "normalize_option",
    "resolve_options",
]


MODES: Final = ("append", "merge", "scd1", "scd2")
HANDLE_DELETES: Final = (None, "soft", "hard")
KEYED_MODES: Final = ("merge", "scd1", "scd2")

_TIMEOUTS = ("lock_timeout", "statement_timeout")
_COLUMN_LISTS = ("keys", "compare_columns", "update_columns")
_COLUMN_NAMES = ("event_timestamp_column", "incremental_column")


def normalize_option(name: str, value: Any, *, where: str, columns: Iterable[str]) -> Any:
    """Validate one option's value and return its normal form (lists become tuples).

    ``where`` names the declaration for the message ("@ematix.table on CustomerDim");
    ``columns`` are the target's declared column names.
    """
    known = tuple(columns)
    if name == "mode":
        if value not in MODES:
            from ematix_flow._engine.options import unknown_mode

            raise unknown_mode(where, value)
        return value
    if name == "handle_deletes":
        if value not in HANDLE_DELETES:
            raise DefinitionError(
                f"{where}: handle_deletes={value!r} is not valid; use None (keep rows), "
                "'soft' (flag them) or 'hard' (delete them)"
            )
        return value
    if name == "ttl":
        if value is None:
            return None
        if not isinstance(value, timedelta) or value <= timedelta(0):
            raise DefinitionError(
                f"{where}: ttl= must be a positive datetime.timedelta, e.g. "
                f"ttl=timedelta(days=7), got {value!r}"
            )
        return value
    if name == "incremental_lookback":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (timedelta, int, float, Decimal)):
            raise DefinitionError(
                f"{where}: incremental_lookback= is a datetime.timedelta for a date/time "
                f"incremental column, or a number for a numeric one, got {value!r}"
            )
        return value
    if name in _TIMEOUTS:
        from ematix_flow._session import timeout_seconds

        return None if value is None else timeout_seconds(value, what=f"{name}=", where=where)
    if name in _COLUMN_NAMES:
        if value is None:
            return None
        _check_column(name, value, where, known)
        return value
    if name in _COLUMN_LISTS:
        if value is None:
            return None
        if isinstance(value, str):
            value = (value,)  # ("a") for ("a",): one name, as pipeline.sync reads it
        if not isinstance(value, (tuple, list)):
            raise DefinitionError(
                f"{where}: {name}= must be a tuple of column names, e.g. "
                f"{name}=({value!r},), got {value!r}"
            )
        if not value:
            raise DefinitionError(
                f"{where}: {name}=() names no columns; leave it out to let the framework infer it"
            )
        for col in value:
            _check_column(name, col, where, known)
        if len(set(value)) != len(value):
            raise DefinitionError(f"{where}: {name}= names a column twice: {tuple(value)}")
        return tuple(value)
    raise DefinitionError(
        f"{where}: unknown option {name}=; the options are {', '.join(OPTION_NAMES)}"
    )


def _check_column(option: str, col: object, where: str, known: tuple[str, ...]) -> None:
    if not isinstance(col, str):
        raise DefinitionError(f"{where}: {option}= must name columns as strings, got {col!r}")
    if col not in known:
        raise DefinitionError(
            f"{where}: {option}= names {col!r}, which is not a column of the target; "
            f"its columns are {', '.join(known)}"
        )


def check_combination(options: Mapping[str, Any], *, where: str) -> None:
    """Refuse option combinations that cannot mean anything (checked on resolved options)."""
    mode = options.get("mode")
    if mode is not None and mode != "scd2":
        for name in ("event_timestamp_column", "ttl"):
            if options.get(name) is not None:
                raise DefinitionError(
                    f"{where}: {name}= applies to mode='scd2' only (mode is {mode!r}); "
                    f"remove {name}= or use mode='scd2'"
                )
    if options.get("handle_deletes") is not None and options.get("incremental_column"):
        raise DefinitionError(
            f"{where}: handle_deletes={options['handle_deletes']!r} needs a full source "
            f"snapshot, but incremental_column={options['incremental_column']!r} reads only "
            "new rows, so every older key would look deleted; drop one of the two"
        )


def is_given(name: str, value: Any) -> bool:
    """Whether ``value`` was given for option ``name`` (``None`` counts, but not for mode)."""
    return value is not NOT_GIVEN and not (name == "mode" and value is None)


def resolve_options(*levels: Mapping[str, Any]) -> dict[str, Any]:
    """Merge option levels, most specific first; an option a level does not give (absent
    or :data:`NOT_GIVEN`) falls through, while ``None`` is a value and wins."""
    resolved: dict[str, Any] = {}
    for name in OPTION_NAMES:
        for level in levels:
            value = level.get(name, NOT_GIVEN)
            if is_given(name, value):
                resolved[name] = value
                break
    return resolved
