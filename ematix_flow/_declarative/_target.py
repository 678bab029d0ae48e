"""``ematix.target(...)``: one target of a multi-target pipeline with its own options.

Example (spec §3.4)::

    @ematix.pipeline(
        targets=[
            ematix.target(DailyFeatures, mode="scd2", event_timestamp_column="event_ts"),
            ematix.target(EventLog, mode="append", target_connection="archive"),
        ],
        schedule="0 1 * * *",
    )
    def sync_user_events(conn):
        return "SELECT user_id, event_ts, ... FROM events.user_events"

Options given here win over the pipeline's, which win over the table's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

from ematix_flow._declarative._options import (
    NOT_GIVEN,
    OPTION_NAMES,
    NotGiven,
    check_combination,
    is_given,
    normalize_option,
)
from ematix_flow._errors import DefinitionError
from ematix_flow.table import ManagedTable, table_spec

__all__ = ["Target", "target"]


@dataclass(frozen=True)
class Target:
    """A target table plus the options that apply to it alone.

    Options not given (:data:`NOT_GIVEN`) fall through to the pipeline, then the table's
    defaults; ``None`` is a value (``handle_deletes=None`` switches a default off).
    """

    table: type[ManagedTable]
    mode: Any = NOT_GIVEN
    target_connection: str | None = None
    event_timestamp_column: Any = NOT_GIVEN
    ttl: Any = NOT_GIVEN
    handle_deletes: Any = NOT_GIVEN
    keys: Any = NOT_GIVEN
    compare_columns: Any = NOT_GIVEN
    update_columns: Any = NOT_GIVEN
    incremental_column: Any = NOT_GIVEN
    incremental_lookback: Any = NOT_GIVEN
    lock_timeout: Any = NOT_GIVEN
    statement_timeout: Any = NOT_GIVEN

    def __post_init__(self) -> None:
        spec = table_spec(self.table)
        where = f"ematix.target({self.table.__name__})"
        if self.target_connection is not None and (
            not isinstance(self.target_connection, str) or not self.target_connection
        ):
            raise DefinitionError(
                f"{where}: target_connection= takes a connection name such as "
                f'"warehouse", got {self.target_connection!r}'
            )
        given: dict[str, Any] = {}
        for name in OPTION_NAMES:
            value = getattr(self, name)
            if is_given(name, value):
                value = normalize_option(name, value, where=where, columns=spec.column_names)
                object.__setattr__(self, name, value)
                given[name] = value
        check_combination(given, where=where)

    def options(self) -> dict[str, Any]:
        """The options this target sets itself (those not given left out)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name in OPTION_NAMES and is_given(f.name, getattr(self, f.name))
        }


def target(
    table: type[ManagedTable],
    /,
    *,
    mode: str,
    target_connection: str | None = None,
    event_timestamp_column: str | NotGiven | None = NOT_GIVEN,
    ttl: timedelta | NotGiven | None = NOT_GIVEN,
    handle_deletes: str | NotGiven | None = NOT_GIVEN,
    keys: tuple[str, ...] | NotGiven | None = NOT_GIVEN,
    compare_columns: tuple[str, ...] | NotGiven | None = NOT_GIVEN,
    update_columns: tuple[str, ...] | NotGiven | None = NOT_GIVEN,
    incremental_column: str | NotGiven | None = NOT_GIVEN,
    incremental_lookback: timedelta | float | NotGiven | None = NOT_GIVEN,
    lock_timeout: float | timedelta | NotGiven | None = NOT_GIVEN,
    statement_timeout: float | timedelta | NotGiven | None = NOT_GIVEN,
) -> Target:
    """One target of ``@ematix.pipeline(targets=[...])``; ``mode=`` is required.

    Example::

        ematix.target(Customer, mode="scd2", target_connection="alt_warehouse",
                      ttl=timedelta(days=7))
    """
    if not (isinstance(table, type) and issubclass(table, ManagedTable)):
        raise DefinitionError(
            f"ematix.target() takes a managed table class first (decorated with "
            f"@ematix.table or subclassing ManagedTable), got {table!r}"
        )
    return Target(
        table,
        mode=mode,
        target_connection=target_connection,
        event_timestamp_column=event_timestamp_column,
        ttl=ttl,
        handle_deletes=handle_deletes,
        keys=keys,
        compare_columns=compare_columns,
        update_columns=update_columns,
        incremental_column=incremental_column,
        incremental_lookback=incremental_lookback,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
    )
