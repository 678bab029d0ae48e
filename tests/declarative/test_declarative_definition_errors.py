"""``@ematix.pipeline`` misuse is refused at decoration time, with the fix in the message."""

from __future__ import annotations

import re
from typing import Annotated

import pytest

from ematix_flow import ematix, natural_key, pk
from ematix_flow._errors import DefinitionError
from ematix_flow.types import BigInt, Text, TimestampTZ


@ematix.table(schema="warehouse")
class Customer:
    customer_id: Annotated[BigInt, pk()]
    email: Text
    signup_at: TimestampTZ | None


@ematix.table(schema="warehouse")
class Unkeyed:
    a: BigInt
    b: Text | None


def _raises(message: str, exc: type[Exception] = DefinitionError) -> pytest.RaisesExc:
    return pytest.raises(exc, match=re.escape(message))


def test_decorator_used_without_call() -> None:
    with _raises(
        "@ematix.pipeline must be called with its target: write "
        "@ematix.pipeline(target=MyTable, ...) above def sync, not bare @ematix.pipeline"
    ):

        @ematix.pipeline  # type: ignore[arg-type]
        def sync(conn):
            return "SELECT 1"


@pytest.mark.parametrize("source_table", ["users", "public.users.x", "public.", ".users"])
def test_source_table_must_be_schema_qualified(source_table: str) -> None:
    with _raises("source_table requires schema.table format", ValueError):

        @ematix.pipeline(target=Customer, source_table=source_table, mode="merge")
        def sync_customers():
            pass


def test_zero_parameters_without_source_table() -> None:
    with _raises(
        "pipeline sync_customers: sync_customers() takes no connection parameter, so its "
        'source must come from source_table="schema.table"'
    ):

        @ematix.pipeline(target=Customer, mode="merge")
        def sync_customers():
            return "SELECT 1"


def test_two_parameters_need_a_source_connection() -> None:
    with _raises(
        "pipeline sync_customers: sync_customers(src_conn, tgt_conn) reads from a second "
        'database, but source_connection= is not set; pass source_connection="oltp"'
    ):

        @ematix.pipeline(target=Customer, mode="merge")
        def sync_customers(src_conn, tgt_conn):
            return "SELECT 1"


@pytest.mark.parametrize(
    "func",
    [
        lambda a, b, c: None,
        lambda *args: None,
        lambda conn, *, extra=1: None,
        lambda **kw: None,
    ],
)
def test_unsupported_signatures(func: object) -> None:
    with _raises("has an unsupported signature; a pipeline function takes () with"):
        ematix.pipeline(target=Customer, mode="merge", name="odd")(func)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["merge", "scd1", "scd2"])
def test_no_resolvable_keys_for_a_keyed_mode(mode: str) -> None:
    with _raises(
        f"pipeline 'sync_unkeyed': target warehouse.unkeyed (mode={mode!r}) has no merge "
        "keys; declare them in one of four ways: pass keys=('col', ...) to "
        "@ematix.pipeline(...); set __merge_keys__ = ('col', ...) in the class body; mark a "
        "natural key with Annotated[<type>, natural_key()]; or mark the primary-key columns "
        "with Annotated[<type>, pk()]"
    ):

        @ematix.pipeline(target=Unkeyed, mode=mode)
        def sync_unkeyed(conn):
            return "SELECT 1 AS a, 'x' AS b"


def test_append_needs_no_keys() -> None:
    @ematix.pipeline(target=Unkeyed, mode="append", name="append_unkeyed")
    def append_unkeyed(conn):
        return "SELECT 1 AS a, 'x' AS b"

    (target,) = append_unkeyed.spec.targets
    assert dict(target.options) == {"mode": "append"}
    assert target.keys is None


def test_a_bare_string_is_one_column() -> None:
    @ematix.pipeline(target=Customer, mode="merge", keys="email", update_columns="signup_at")
    def by_email(conn):
        return "SELECT 1"

    (target,) = by_email.spec.targets
    assert target.options["keys"] == ("email",)
    assert target.options["update_columns"] == ("signup_at",)
    assert (target.keys, target.keys_origin) == (("email",), "explicit keys=")


def test_no_mode_anywhere() -> None:
    with _raises('pipeline sync_customers, target warehouse.customer: no mode; pass mode="merge"'):

        @ematix.pipeline(target=Customer)
        def sync_customers(conn):
            return "SELECT 1"


def test_target_and_targets_are_exclusive() -> None:
    message = "pass exactly one of target=MyTable or targets=[ematix.target(...), ...]"
    with _raises(message):

        @ematix.pipeline(mode="merge")
        def nothing(conn):
            return "SELECT 1"

    with _raises(message):

        @ematix.pipeline(
            target=Customer, targets=[ematix.target(Customer, mode="merge")], mode="merge"
        )
        def both(conn):
            return "SELECT 1"


def test_targets_must_be_tables() -> None:
    with _raises("is not a target; use a class decorated with @ematix.table"):

        @ematix.pipeline(targets=["warehouse.customer"], mode="merge")
        def sync(conn):
            return "SELECT 1"

    with _raises("targets= must be a non-empty list of ematix.target(...) entries"):

        @ematix.pipeline(targets=[], mode="merge")
        def sync2(conn):
            return "SELECT 1"


def test_same_target_twice() -> None:
    with _raises("target warehouse.customer on connection 'warehouse' is listed twice"):

        @ematix.pipeline(
            targets=[ematix.target(Customer, mode="merge"), ematix.target(Customer, mode="scd1")]
        )
        def twice(conn):
            return "SELECT 1"


def test_engine_rules_apply_at_decoration() -> None:
    with _raises("event_timestamp_column= only applies to mode='scd2'"):

        @ematix.pipeline(target=Customer, mode="merge", event_timestamp_column="signup_at")
        def sync(conn):
            return "SELECT 1"

    with _raises("keys= names 'nope'"):

        @ematix.pipeline(target=Customer, mode="merge", keys=("nope",))
        def sync2(conn):
            return "SELECT 1"


def test_table_defaults_are_checked_against_the_pipeline_mode() -> None:
    @ematix.table(schema="features", event_timestamp_column="ts")
    class Events:
        id: Annotated[BigInt, natural_key()]
        ts: TimestampTZ

    with _raises("event_timestamp_column= only applies to mode='scd2'"):

        @ematix.pipeline(target=Events, mode="append")
        def sync(conn):
            return "SELECT 1"


def test_column_map_needs_source_table_and_known_columns() -> None:
    with _raises("pipeline sync: column_map= renames the columns of source_table=, which is not"):

        @ematix.pipeline(target=Customer, mode="merge", column_map={"customer_id": "id"})
        def sync(conn):
            return "SELECT 1"

    with _raises("column_map= maps 'nope', which the target does not declare"):

        @ematix.pipeline(
            target=Customer, mode="merge", source_table="public.users", column_map={"nope": "x"}
        )
        def sync2():
            pass


def test_bad_force_path_and_connection_names() -> None:
    with _raises("pipeline sync: force_path='fast' is not valid; use 'same_db' or 'cross_db'"):

        @ematix.pipeline(target=Customer, mode="merge", force_path="fast")
        def sync(conn):
            return "SELECT 1"

    with _raises("pipeline sync2: target_connection= takes the name of a configured connection"):

        @ematix.pipeline(target=Customer, mode="merge", target_connection="")
        def sync2(conn):
            return "SELECT 1"

    with _raises("pipeline sync3: continue_on_failure= must be True or False"):

        @ematix.pipeline(target=Customer, mode="merge", continue_on_failure="yes")  # type: ignore[arg-type]
        def sync3(conn):
            return "SELECT 1"
