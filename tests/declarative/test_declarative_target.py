"""``ematix.target(...)``: per-target options, validated when declared."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

import pytest

from ematix_flow import ematix, pk
from ematix_flow._declarative._options import NOT_GIVEN, resolve_options
from ematix_flow._errors import DefinitionError
from ematix_flow.types import BigInt, Text, TimestampTZ


@ematix.table(schema="features", mode="merge", handle_deletes="hard")
class Features:
    user_id: Annotated[BigInt, pk()]
    label: Text | None
    event_ts: TimestampTZ


def test_target_keeps_given_options_only() -> None:
    t = ematix.target(
        Features,
        mode="scd2",
        target_connection="alt_warehouse",
        event_timestamp_column="event_ts",
        ttl=timedelta(days=7),
        keys=["user_id"],
    )
    assert t.table is Features
    assert t.target_connection == "alt_warehouse"
    assert t.keys == ("user_id",)
    assert t.compare_columns is NOT_GIVEN
    assert t.options() == {
        "mode": "scd2",
        "keys": ("user_id",),
        "event_timestamp_column": "event_ts",
        "ttl": timedelta(days=7),
    }
    with pytest.raises(AttributeError):
        t.mode = "append"  # type: ignore[misc]


def test_most_specific_level_wins_and_none_is_a_value() -> None:
    t = ematix.target(Features, mode="scd2", keys=None)
    pipeline_level = {"mode": "append", "keys": ("user_id",), "handle_deletes": None}
    resolved = resolve_options(t.options(), pipeline_level, Features.__table_options__)
    # keys=None (infer) at the target wins; handle_deletes=None at the pipeline switches
    # the table's handle_deletes="hard" off.
    assert resolved == {"mode": "scd2", "keys": None, "handle_deletes": None}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "snapshot"}, "ematix.target(Features): mode='snapshot' is not a mode"),
        ({"mode": "merge", "keys": ("nope",)}, "keys= names 'nope', which is not a column"),
        (
            {"mode": "append", "ttl": timedelta(days=1)},
            "ttl= applies to mode='scd2' only (mode is 'append')",
        ),
        ({"mode": "merge", "target_connection": ""}, "target_connection= takes a connection"),
    ],
)
def test_target_options_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DefinitionError, match=re.escape(message)):
        ematix.target(Features, **kwargs)  # type: ignore[arg-type]


def test_target_needs_a_managed_table() -> None:
    with pytest.raises(DefinitionError, match=re.escape("ematix.target() takes a managed table")):
        ematix.target(dict, mode="merge")  # type: ignore[arg-type]
