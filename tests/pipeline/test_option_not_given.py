"""``None`` is a value, "not given" is a sentinel: a pipeline can switch a table default
off (``handle_deletes=None`` over ``@ematix.table(handle_deletes="hard")``), through
``pipeline.sync`` and through the decorators' option levels."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import pytest

from ematix_flow import ematix, pipeline, pk
from ematix_flow._declarative._options import NOT_GIVEN, resolve_options
from ematix_flow.source import Source
from ematix_flow.types import BigInt, Text


@ematix.table(schema="wh", mode="merge", handle_deletes="hard", keys=("email",))
class Member:
    id: Annotated[BigInt, pk()]
    email: Text
    name: Text | None


def test_resolve_options_lets_none_win_and_not_given_fall_through() -> None:
    table = {"mode": "merge", "handle_deletes": "hard", "ttl": None}
    assert resolve_options({"handle_deletes": None}, table) == {
        "mode": "merge",
        "handle_deletes": None,
        "ttl": None,
    }
    assert resolve_options({"handle_deletes": NOT_GIVEN}, {}, table)["handle_deletes"] == "hard"
    # mode has no "off": None there means not given.
    assert resolve_options({"mode": None}, table)["mode"] == "merge"


def test_decorator_levels_can_switch_a_table_default_off(names: list[str]) -> None:
    def options(**kw: Any) -> dict[str, Any]:
        name = f"p_{uuid.uuid4().hex[:6]}"
        names.append(name)

        @ematix.pipeline(name=name, **kw)
        def body(conn: Any) -> str:
            return "SELECT 1"

        return dict(body.spec.targets[0].options)

    assert options(target=Member)["handle_deletes"] == "hard"
    assert options(target=Member, handle_deletes=None)["handle_deletes"] is None
    assert (
        options(target=ematix.target(Member, mode="merge", handle_deletes=None))["handle_deletes"]
        is None
    )
    # The most specific level still wins over a less specific None.
    assert (
        options(
            target=ematix.target(Member, mode="merge", handle_deletes="soft"),
            handle_deletes=None,
        )["handle_deletes"]
        == "soft"
    )
    # keys=None at the pipeline drops the table's keys=("email",): inferred from pk().
    inferred = options(target=Member, keys=None)
    assert inferred["keys"] is None
    named = f"p_{uuid.uuid4().hex[:6]}"
    names.append(named)

    @ematix.pipeline(name=named, target=Member, keys=None)
    def again(conn: Any) -> str:
        return "SELECT 1"

    assert again.spec.targets[0].keys == ("id",)


@pytest.mark.db
def test_sync_handle_deletes_none_overrides_the_table_default(env: Any) -> None:
    env.wh(
        "CREATE TABLE src (id bigint PRIMARY KEY, email text NOT NULL, name text)",
        "INSERT INTO src VALUES (1, 'a@x', 'A'), (2, 'b@x', 'B'), (3, 'c@x', 'C')",
    )
    source = Source.postgres_query(env.warehouse, "SELECT id, email, name FROM src")

    def sync(**kw: Any) -> dict[str, Any]:
        return pipeline.sync(target=Member, source=source, target_connection=env.warehouse, **kw)

    assert sync()["rows_inserted"] == 3
    env.wh("DELETE FROM src WHERE id = 3")
    kept = sync(handle_deletes=None)
    assert kept["rows_deleted"] == 0
    assert env.table("wh", "member", "id", "id") == [(1,), (2,), (3,)]
    # Not given: the table's handle_deletes="hard" applies.
    gone = sync()
    assert gone["rows_deleted"] == 1
    assert env.table("wh", "member", "id", "id") == [(1,), (2,)]
