"""``TargetOptions``: everything a caller decides about one target, validated eagerly.

Built by :func:`ematix_flow.pipeline.sync` (and the decorators) from keyword arguments;
read by :func:`ematix_flow._engine.plan.plan`. Validation that needs only the options
and the table spec happens here, so a wrong combination fails before any database is
touched, with a message that states the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Literal

from ematix_flow._engine.sql_common import is_temporal
from ematix_flow._errors import DefinitionError
from ematix_flow._session import Timeouts, resolve_timeouts, timeout_seconds
from ematix_flow._tablespec import TableSpec

__all__ = ["DELETES", "MODES", "PATHS", "TargetOptions", "unknown_mode"]

Mode = Literal["append", "merge", "scd1", "scd2"]
MODES: tuple[str, ...] = ("append", "merge", "scd1", "scd2")
#: What other tools call our modes.
_MODE_SYNONYMS = {"upsert": "merge", "insert": "append"}
PATHS: tuple[str, ...] = ("same_db", "cross_db")
DELETES: tuple[str | None, ...] = (None, "soft", "hard")


def unknown_mode(where: str, value: object) -> DefinitionError:
    """The error for ``mode=value`` that is no mode, with the closest mode suggested
    (``"SCD2"``, ``"scd-2"``, ``"merg"``, ``"upsert"``)."""
    import difflib
    import re

    message = f"{where}: mode={value!r} is not a mode; use one of {', '.join(map(repr, MODES))}"
    if isinstance(value, str):
        key = re.sub(r"[^a-z0-9]", "", value.lower())
        close = difflib.get_close_matches(key, MODES, n=1, cutoff=0.6)
        guess = key if key in MODES else _MODE_SYNONYMS.get(key) or next(iter(close), None)
        if guess:
            message += f". Did you mean mode={guess!r}?"
    return DefinitionError(message)


def _names(value: object, what: str, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        # A bare string is almost always ("a",) written as ("a"): accept one name.
        value = (value,)
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
        raise DefinitionError(f"{where}: {what} must be a tuple of column names, got {value!r}")
    if not value:
        raise DefinitionError(f"{where}: {what} is empty; omit it to use the default")
    return tuple(value)


@dataclass(frozen=True, kw_only=True)
class TargetOptions:
    """How one target is synced. Column tuples are ``None`` when left to the defaults."""

    table: TableSpec
    mode: str
    keys: tuple[str, ...] | None = None
    compare_columns: tuple[str, ...] | None = None
    update_columns: tuple[str, ...] | None = None
    event_timestamp_column: str | None = None
    ttl: timedelta | None = None
    handle_deletes: str | None = None
    incremental_column: str | None = None
    #: Re-read this much below the watermark: a ``timedelta`` for a date/time
    #: incremental column, a number for a numeric one.
    incremental_lookback: timedelta | int | float | Decimal | None = None
    force_path: str | None = None
    #: Seconds (``None``: no limit); ``False``: not given, so the environment or the
    #: default decides (:func:`ematix_flow._session.resolve_timeouts`).
    lock_timeout: float | bool | None = False
    statement_timeout: float | bool | None = False

    @property
    def timeouts(self) -> Timeouts:
        """The timeouts of this target's sessions, resolved now (env vars included)."""
        return resolve_timeouts(
            lock_timeout=self.lock_timeout, statement_timeout=self.statement_timeout
        )

    def __post_init__(self) -> None:
        where = f"target {self.table.qualified_name}"
        if self.mode not in MODES:
            raise unknown_mode(where, self.mode)
        for attr in ("keys", "compare_columns", "update_columns"):
            object.__setattr__(self, attr, _names(getattr(self, attr), f"{attr}=", where))
        declared = {c.name for c in self.table.declared_columns}

        def known(cols: tuple[str, ...] | None, what: str) -> None:
            for c in cols or ():
                if c not in declared:
                    raise DefinitionError(
                        f"{where}: {what} names {c!r}, which the table does not declare; "
                        f"declared columns are {', '.join(self.table.column_names)}"
                    )

        known(self.keys, "keys=")
        known(self.compare_columns, "compare_columns=")
        known(self.update_columns, "update_columns=")
        if self.event_timestamp_column is not None:
            known((self.event_timestamp_column,), "event_timestamp_column=")
            if self.mode != "scd2":
                raise DefinitionError(
                    f"{where}: event_timestamp_column= only applies to mode='scd2' "
                    f"(it sets valid_from of new versions); this target is mode={self.mode!r}"
                )
        if self.incremental_column is not None:
            known((self.incremental_column,), "incremental_column=")
        if self.ttl is not None:
            if not isinstance(self.ttl, timedelta) or self.ttl <= timedelta(0):
                raise DefinitionError(
                    f"{where}: ttl= must be a positive datetime.timedelta, got {self.ttl!r}"
                )
            if self.mode != "scd2":
                raise DefinitionError(
                    f"{where}: ttl= only applies to mode='scd2' (it expires current "
                    f"versions); this target is mode={self.mode!r}"
                )
        for attr in ("lock_timeout", "statement_timeout"):
            value = getattr(self, attr)
            if value is not False and value is not None:
                object.__setattr__(self, attr, timeout_seconds(value, what=f"{attr}=", where=where))
        if self.incremental_lookback is not None:
            self._check_lookback(where)
        if self.handle_deletes not in DELETES:
            raise DefinitionError(
                f"{where}: handle_deletes={self.handle_deletes!r} is not valid; use None, "
                "'soft' or 'hard'"
            )
        if self.handle_deletes is not None and self.mode == "append":
            raise DefinitionError(
                f"{where}: handle_deletes= needs keys to know which rows disappeared; "
                "mode='append' has none. Use mode='merge' (or drop handle_deletes=)."
            )
        if self.handle_deletes is not None and self.incremental_column is not None:
            raise DefinitionError(
                f"{where}: handle_deletes={self.handle_deletes!r} cannot be combined with "
                f"incremental_column={self.incremental_column!r}: an incremental source only "
                "carries new rows, so every key it omits would look deleted. Drop one of them."
            )
        if self.force_path is not None and self.force_path not in PATHS:
            raise DefinitionError(
                f"{where}: force_path={self.force_path!r} is not valid; use 'same_db' or 'cross_db'"
            )
        if self.mode == "append" and (self.compare_columns or self.update_columns):
            raise DefinitionError(
                f"{where}: compare_columns=/update_columns= do not apply to mode='append', "
                "which inserts every source row"
            )
        if self.mode == "merge" and self.compare_columns is not None:
            # merge compares exactly the columns it updates
            raise DefinitionError(
                f"{where}: mode='merge' compares the columns it updates; pass "
                "update_columns= instead of compare_columns= (or use mode='scd1')"
            )

    def _check_lookback(self, where: str) -> None:
        value = self.incremental_lookback
        if self.incremental_column is None:
            raise DefinitionError(
                f"{where}: incremental_lookback= re-reads rows below the watermark of "
                "incremental_column=, which is not set; set both or drop incremental_lookback="
            )
        col = self.table.column(self.incremental_column)
        temporal = is_temporal(col)
        if temporal and not isinstance(value, timedelta):
            raise DefinitionError(
                f"{where}: incremental_lookback= for the {col.type.ddl} column "
                f"{col.name!r} is a datetime.timedelta (e.g. timedelta(minutes=10)), got "
                f"{value!r}"
            )
        if not temporal and (
            isinstance(value, (timedelta, bool)) or not isinstance(value, (int, float, Decimal))
        ):
            raise DefinitionError(
                f"{where}: incremental_lookback= for the {col.type.ddl} column "
                f"{col.name!r} is a number in that column's units (e.g. 1000), got {value!r}"
            )
        if col.type.ddl in ("bigint", "integer", "smallint") and not (
            isinstance(value, int) or (isinstance(value, Decimal) and value == value.to_integral())
        ):
            raise DefinitionError(
                f"{where}: incremental_lookback= for the {col.type.ddl} column {col.name!r} "
                f"is a whole number, got {value!r}"
            )
        if (value.total_seconds() if isinstance(value, timedelta) else value) <= 0:
            raise DefinitionError(f"{where}: incremental_lookback= must be positive, got {value!r}")
        if self.mode == "append" and not (self.table.primary_key or self.table.unique_constraints):
            raise DefinitionError(
                f"{where}: incremental_lookback= re-reads rows that are already loaded; "
                "mode='append' can only skip them by a key, and this table declares none. "
                "Declare a primary key or natural key that identifies a source row (pk(), "
                "natural_key()), or use a keyed mode (merge), or drop incremental_lookback=."
            )

    @property
    def lookback_sql(self) -> str | None:
        """The lookback as SQL literal text (an interval's, or a number's)."""
        value = self.incremental_lookback
        if value is None:
            return None
        if isinstance(value, timedelta):
            return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
        return str(value)
