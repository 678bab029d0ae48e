"""Plans: built without a database, stable, complete; merge-key resolution and reasons."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

import pytest

from ematix_flow import ematix, natural_key, pk
from ematix_flow._core import connect
from ematix_flow._engine import TargetOptions, plan
from ematix_flow._errors import DefinitionError
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, String, Text

OFFLINE = connect("postgresql://app:s3cret@db.invalid:5432/wh")
OTHER = connect("postgresql://app:s3cret@oltp.invalid:5432/main")


class ByPk(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "by_pk"
    id = Column(BigInt(), nullable=False, primary_key=True)
    email = Column(Text(), nullable=False)
    name = Column(Text())


class ByUnique(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "by_unique"
    __unique_constraints__ = (("email",),)
    id = Column(BigInt(), nullable=False, primary_key=True)
    email = Column(Text(), nullable=False)


class ByMergeKeys(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "by_mk"
    __unique_constraints__ = (("email",),)
    __merge_keys__ = ("name",)
    id = Column(BigInt(), nullable=False, primary_key=True)
    email = Column(Text(), nullable=False)
    name = Column(Text(), nullable=False)


@ematix.table(schema="wh")
class Natural:
    id: Annotated[BigInt, pk()]
    email: Annotated[String[256], natural_key()]


@ematix.table(schema="wh")
class Marked:
    id: Annotated[BigInt, pk()]
    email: Text


class NoKeys(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "no_keys"
    a = Column(Text())


def offline_plan(table: Any, mode: str = "merge", **kw: Any) -> Any:
    src = Source.postgres_query(kw.pop("conn", OFFLINE), "SELECT * FROM app.t")
    opts = TargetOptions(table=table.__table_spec__, mode=mode, **kw)
    return plan(opts, src, OFFLINE, pipeline="p", inspect=False)


@pytest.mark.parametrize(
    ("table", "kw", "keys", "reason"),
    [
        (ByPk, {"keys": ("email",)}, ("email",), "[from explicit keys=]"),
        (ByMergeKeys, {}, ("name",), "[from __merge_keys__]"),
        (ByUnique, {}, ("email",), "[from __unique_constraints__]"),
        (Natural, {}, ("email",), "[from natural_key()]"),
        (ByPk, {}, ("id",), "[from primary_key=True]"),
        (Marked, {}, ("id",), "[from pk()]"),  # the form the user wrote
    ],
)
def test_merge_keys_resolve_in_spec_order(table: Any, kw: Any, keys: Any, reason: str) -> None:
    for mode in ("merge", "scd1", "scd2"):
        p = offline_plan(table, mode, **kw)
        assert p.keys == keys
        assert p.decision("keys").reason == reason


def test_natural_key_differing_from_pk_warns_with_spec_wording() -> None:
    p = offline_plan(Natural)
    assert p.warnings == (
        "Pipeline p: merge key resolved to (email) from natural_key(), which differs from "
        "declared primary key (id). Pass keys= explicitly to silence this warning.",
    )
    assert offline_plan(Natural, keys=("email",)).warnings == ()


def test_no_keys_error_lists_all_four_options_in_the_tables_own_vocabulary() -> None:
    with pytest.raises(DefinitionError) as err:
        offline_plan(NoKeys)
    text = str(err.value)
    for option in (
        "keys=('col', ...) to pipeline.sync() or pipeline.register()",
        "__merge_keys__",
        "__unique_constraints__",
        "Column(..., primary_key=True)",
    ):
        assert option in text
    assert "pk()" not in text and "natural_key()" not in text
    assert "wh.no_keys" in text and "pipeline 'p'" in text
    assert not text.endswith(".")  # callers append their own punctuation


def test_no_keys_error_of_a_decorated_pipeline_speaks_decorators() -> None:
    @ematix.table(schema="wh")
    class Unkeyed:
        a: Text

    for kwargs, keys_go_to in (
        ({"target": Unkeyed, "mode": "merge"}, "@ematix.pipeline(...)"),
        ({"targets": [ematix.target(Unkeyed, mode="scd2")]}, "ematix.target(...)"),
    ):
        with pytest.raises(DefinitionError) as err:
            ematix.pipeline(source_table="app.t", **kwargs)(lambda: None)
        text = str(err.value)
        assert f"pass keys=('col', ...) to {keys_go_to}" in text, text
        for marker in ("Annotated[<type>, natural_key()]", "Annotated[<type>, pk()]"):
            assert marker in text
        for imperative in ("to the sync", "primary_key=True", "pipeline.sync"):
            assert imperative not in text
        assert not text.endswith(".")


def test_plan_without_database_is_complete_stable_and_redacted() -> None:
    p = offline_plan(ByPk, "scd2", conn=OTHER)
    d = p.to_dict()
    text = json.dumps(d)
    assert "s3cret" not in text
    assert d == offline_plan(ByPk, "scd2", conn=OTHER).to_dict()
    assert d["path"] == "cross_db"
    assert "different databases" in p.decision("path").reason
    assert d["framework_columns"] == ["valid_from", "valid_to", "is_current", "row_hash"]
    assert d["table_exists"] is None and d["unknown"]
    labels = [s["label"] for s in d["steps"]]
    assert labels[:2] == ["create schema if missing", "create table if missing"]
    assert "copy source → stage" in labels and labels[-1] == "record run"
    assert "PRIMARY KEY" not in d["steps"][1]["sql"]
    assert "create current-version index" in labels
    assert p.decision("versions_key").value is None
    assert "unique by construction" in p.decision("versions_key").reason
    assert p.decision("compare_columns").value == ("email", "name")


def test_path_same_db_and_forced() -> None:
    assert offline_plan(ByPk).path == "same_db"
    forced = offline_plan(ByPk, force_path="cross_db")
    assert forced.path == "cross_db"
    assert forced.decision("path").reason == "forced by force_path='cross_db'"


def test_explicit_keys_get_a_unique_constraint_when_the_table_is_created() -> None:
    p = offline_plan(ByPk, keys=("email",))
    assert 'UNIQUE ("email")' in p.steps[1].sql


def test_table_source_synthesizes_select_list_with_column_map() -> None:
    src = Source.postgres_table(OFFLINE, "app.users", column_map={"id": "user id"})
    assert src.select_sql(ByPk.__table_spec__) == (
        'SELECT "user id" AS "id", "email", "name" FROM "app"."users"'
    )


@pytest.mark.parametrize("name", ["users", "a.b.c", ".users", "public."])
def test_table_source_requires_schema_dot_table(name: str) -> None:
    with pytest.raises(DefinitionError, match=r"source_table requires schema\.table format"):
        Source.postgres_table(OFFLINE, name)


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        (
            {"mode": "merge", "handle_deletes": "soft", "incremental_column": "id"},
            "cannot be combined",
        ),
        ({"mode": "merge", "ttl": timedelta(days=1)}, "ttl= only applies"),
        ({"mode": "scd2", "ttl": 5}, "positive datetime.timedelta"),
        ({"mode": "upsert"}, "is not a mode.*Did you mean mode='merge'"),
        ({"mode": "Scd-2"}, "is not a mode.*Did you mean mode='scd2'"),
        ({"mode": "snapshot"}, "is not a mode; use one of 'append', 'merge', 'scd1', 'scd2'$"),
        ({"mode": "merge", "keys": ("nope",)}, "does not declare"),
        ({"mode": "append", "handle_deletes": "hard"}, "needs keys"),
    ],
)
def test_invalid_option_combinations_are_refused(kw: Any, fragment: str) -> None:
    with pytest.raises(DefinitionError, match=fragment):
        TargetOptions(table=ByPk.__table_spec__, **kw)


class Seen(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "seen"
    id = Column(BigInt(), nullable=False, primary_key=True)
    email = Column(Text(), nullable=False)
    name = Column(Text())
    last_seen = Column(Text(), nullable=False)


def test_scd2_default_compare_leaves_out_the_event_timestamp_column() -> None:
    p = offline_plan(Seen, "scd2", event_timestamp_column="last_seen")
    decision = p.decision("compare_columns")
    assert decision.value == ("email", "name")
    assert decision.reason == (
        "[default: every non-key declared column except event_timestamp_column='last_seen']"
    )
    # Without an event time, and for scd1, every non-key column is compared.
    assert offline_plan(Seen, "scd2").decision("compare_columns").value == (
        "email",
        "name",
        "last_seen",
    )
    assert offline_plan(Seen, "scd1").decision("compare_columns").value == (
        "email",
        "name",
        "last_seen",
    )
    # An explicit list always wins, event time included.
    explicit = offline_plan(
        Seen, "scd2", event_timestamp_column="last_seen", compare_columns=("last_seen",)
    )
    assert explicit.decision("compare_columns").value == ("last_seen",)
