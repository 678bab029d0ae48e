"""``@ematix.table`` and the markers: the same ``TableSpec`` as the imperative form,
and every misuse refused at decoration time with a message naming the fix."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from typing import Annotated, ClassVar, Optional

import attrs
import pydantic
import pytest
from spec_examples import (
    SECTION_1_TABLE,
    SECTION_2_TABLE,
    SECTION_4_AFTER_TABLE,
    SECTION_4_TODAY_TABLE,
    load,
)

from ematix_flow import ematix, natural_key, nullable, pk
from ematix_flow._errors import DefinitionError, MarkerUsageError
from ematix_flow._schema.ddl import create_table_sql
from ematix_flow.table import ManagedTable
from ematix_flow.types import (
    BigInt,
    Boolean,
    Column,
    Date,
    Integer,
    Numeric,
    String,
    Text,
    TimestampTZ,
)


def _ddl(cls: type[ManagedTable]) -> str:
    return create_table_sql(cls.__table_spec__).as_string(None)


# -- the spec's examples: decorated and imperative twins are the same table ---------------


def test_spec_section_2_equals_section_1() -> None:
    CustomerDimToday = load(SECTION_1_TABLE).CustomerDim
    CustomerDim = load(SECTION_2_TABLE).CustomerDim

    assert issubclass(CustomerDim, ManagedTable)
    assert CustomerDim.__name__ == "CustomerDim"
    assert CustomerDim.__tablename__ == "customer_dim"
    assert CustomerDim.__table_spec__ == CustomerDimToday.__table_spec__
    assert CustomerDim.__primary_keys__ == ("customer_id",)
    assert _ddl(CustomerDim) == _ddl(CustomerDimToday)


def test_spec_section_4_after_equals_today() -> None:
    Today = load(SECTION_4_TODAY_TABLE).UserPurchaseFeatures
    UserPurchaseFeatures = load(SECTION_4_AFTER_TABLE).UserPurchaseFeatures

    spec = UserPurchaseFeatures.__table_spec__
    assert spec == Today.__table_spec__
    assert spec.primary_key == ("user_id", "period_start")
    assert spec.column("total_spend").type == Numeric(12, 2)
    assert _ddl(UserPurchaseFeatures) == _ddl(Today)


def test_section_3_example_composite_key_and_nullability() -> None:
    @ematix.table(schema="warehouse", name="customer_dim")
    class CustomerDim:
        customer_id: Annotated[BigInt, pk()]
        order_date: Annotated[Date, pk()]
        email: String[256]
        name: Text | None
        balance: Numeric[12, 2] | None
        is_active: Boolean
        created_at: TimestampTZ

    spec = CustomerDim.__table_spec__
    assert spec.primary_key == ("customer_id", "order_date")
    assert [(c.name, c.type.ddl, c.nullable) for c in spec.columns] == [
        ("customer_id", "bigint", False),
        ("order_date", "date", False),
        ("email", "character varying(256)", False),
        ("name", "text", True),
        ("balance", "numeric(12,2)", True),
        ("is_active", "boolean", False),
        ("created_at", "timestamp with time zone", False),
    ]


def test_optional_nullable_marker_and_instances_are_equivalent() -> None:
    @ematix.table(schema="s")
    class T:
        a: Annotated[BigInt, pk()]
        b: Optional[Text]  # noqa: UP045 - the spec names Optional[T] explicitly
        c: Annotated[Text, nullable()]
        d: Annotated[Text | None, natural_key()]
        e: Optional[Annotated[Text, natural_key()]]  # noqa: UP045
        f: String(12)  # an instance works too

    spec = T.__table_spec__
    assert [c.nullable for c in spec.columns] == [False, True, True, True, True, False]
    assert spec.column("f").type == String(12)
    assert spec.unique_constraints == (("d", "e"),)


def test_natural_key_groups_in_first_appearance_order() -> None:
    @ematix.table(schema="s", name="accounts")
    class Account:
        id: Annotated[BigInt, pk(autoincrement=True)]
        legacy_code: Annotated[Text, natural_key("legacy")]
        tenant: Annotated[Integer, natural_key(), natural_key("legacy")]
        email: Annotated[Text, natural_key()]

    class AccountToday(ManagedTable):
        __schema__ = "s"
        __tablename__ = "accounts"
        __unique_constraints__ = (("legacy_code", "tenant"), ("tenant", "email"))
        __unique_origin__ = "natural_key()"

        id = Column(BigInt(), nullable=False, primary_key=True, autoincrement=True)
        legacy_code = Column(Text(), nullable=False)
        tenant = Column(Integer(), nullable=False)
        email = Column(Text(), nullable=False)

    spec = Account.__table_spec__
    assert Account.__unique_constraints__ == (("legacy_code", "tenant"), ("tenant", "email"))
    assert spec.unique_origin == "natural_key()"
    assert spec.column("id").identity is True
    assert spec == AccountToday.__table_spec__
    assert _ddl(Account) == _ddl(AccountToday)


def test_unique_constraints_dunder_escape_hatch_and_merge_keys() -> None:
    @ematix.table(schema="s")
    class Order:
        __unique_constraints__ = (("shop", "number"),)
        __merge_keys__ = ("shop", "number")

        id: Annotated[BigInt, pk()]
        shop: Text
        number: BigInt

    spec = Order.__table_spec__
    assert spec.unique_constraints == (("shop", "number"),)
    assert spec.unique_origin == "__unique_constraints__"
    assert spec.merge_keys == ("shop", "number")
    assert spec.name == "order"


def test_table_defaults_become_table_options() -> None:
    @ematix.table(
        schema="features",
        mode="scd2",
        event_timestamp_column="ts",
        ttl=timedelta(days=7),
        keys=["user_id"],
        compare_columns=("score",),
        handle_deletes="hard",
    )
    class UserScore:
        user_id: Annotated[BigInt, pk()]
        score: Numeric[6, 3] | None
        ts: TimestampTZ

    class UserScoreToday(ManagedTable):
        __schema__ = "features"
        __tablename__ = "user_score"
        __table_options__ = {
            "mode": "scd2",
            "event_timestamp_column": "ts",
            "ttl": timedelta(days=7),
            "keys": ("user_id",),
            "compare_columns": ("score",),
            "handle_deletes": "hard",
        }
        user_id = Column(BigInt(), nullable=False, primary_key=True)
        score = Column(Numeric(6, 3))
        ts = Column(TimestampTZ(), nullable=False)

    assert UserScore.__table_options__["keys"] == ("user_id",)
    assert UserScore.__table_spec__ == UserScoreToday.__table_spec__
    assert UserScore.__table_spec__.options["ttl"] == timedelta(days=7)


def test_class_body_is_kept_and_classvars_are_not_columns() -> None:
    @ematix.table(schema="s")
    class Event:
        """Events."""

        kind: ClassVar[str] = "event"
        id: Annotated[BigInt, pk()]
        payload: Text | None

        @classmethod
        def label(cls) -> str:
            return f"{cls.__schema__}.{cls.__tablename__}"

    assert Event.__doc__ == "Events."
    assert Event.kind == "event"
    assert Event.label() == "s.event"
    assert Event.__table_spec__.column_names == ("id", "payload")
    assert Event.__module__ == __name__


def test_annotations_may_name_types_local_to_a_function() -> None:
    Money = Numeric[12, 2]

    @ematix.table(schema="s")
    class Payment:
        id: Annotated[BigInt, pk()]
        amount: Money | None

    assert Payment.__table_spec__.column("amount").type == Numeric(12, 2)


def test_mixin_base_columns_come_first() -> None:
    class Audited:
        loaded_by: Text

    @ematix.table(schema="s")
    class Row(Audited):
        id: Annotated[BigInt, pk()]

    assert Row.__table_spec__.column_names == ("loaded_by", "id")
    assert issubclass(Row, Audited)


def test_markers_are_values() -> None:
    assert pk() == pk()
    assert pk(autoincrement=True).autoincrement is True
    assert natural_key().group == "default"
    assert natural_key("legacy").group == "legacy"
    assert nullable() == nullable()
    assert repr(ematix) == "<ematix namespace: table, pipeline, target>"


# -- decoration-time errors ----------------------------------------------------------------


def _raises(exc: type[Exception], message: str) -> pytest.RaisesExc:
    return pytest.raises(exc, match=re.escape(message))


def test_missing_schema() -> None:
    with _raises(
        DefinitionError,
        '@ematix.table on Customer needs schema=, e.g. @ematix.table(schema="warehouse")',
    ):

        @ematix.table()
        class Customer:
            id: Annotated[BigInt, pk()]


def test_decorator_used_without_call() -> None:
    with _raises(
        DefinitionError,
        '@ematix.table must be called: write @ematix.table(schema="...") above class '
        "Customer, not bare @ematix.table",
    ):

        @ematix.table  # type: ignore[arg-type]
        class Customer:
            id: Annotated[BigInt, pk()]


@pytest.mark.parametrize("marker", ["pk", "natural_key", "nullable"])
def test_marker_used_bare(marker: str) -> None:
    bare = {"pk": pk, "natural_key": natural_key, "nullable": nullable}[marker]
    with _raises(
        MarkerUsageError,
        f"Customer.id: the marker {marker} is used without calling it; use {marker}() "
        f"(e.g. Annotated[BigInt, {marker}()])",
    ):

        @ematix.table(schema="s")
        class Customer:
            id: Annotated[BigInt, bare]


def test_marker_error_is_a_definition_error() -> None:
    assert issubclass(MarkerUsageError, DefinitionError)
    assert issubclass(DefinitionError, ValueError)


@pytest.mark.parametrize("annotation", [int, str, 3, list[int]])
def test_non_type_annotation(annotation: object) -> None:
    label = getattr(annotation, "__name__", None) or repr(annotation)
    with _raises(
        DefinitionError,
        f"Customer.email: {label} is not an ematix_flow column type; annotate with a type "
        "from ematix_flow.types",
    ):
        ematix.table(schema="s")(type("Customer", (), {"__annotations__": {"email": annotation}}))


def test_unresolvable_annotation() -> None:
    with _raises(DefinitionError, "@ematix.table on Customer: an annotation cannot be read"):

        @ematix.table(schema="s")
        class Customer:
            id: NoSuchType  # type: ignore[name-defined]  # noqa: F821


def test_annotation_that_is_not_an_expression() -> None:
    with _raises(DefinitionError, "@ematix.table on Customer: an annotation cannot be read"):
        ematix.table(schema="s")(type("Customer", (), {"__annotations__": {"email": "not a type"}}))


@pytest.mark.parametrize("form", ["union", "marker"])
def test_pk_on_nullable_column(form: str) -> None:
    with _raises(
        DefinitionError,
        "Customer.id is marked pk() but declared nullable; primary-key columns are NOT NULL. "
        "Remove '| None' / nullable() from the annotation, or drop pk()",
    ):
        if form == "union":

            @ematix.table(schema="s")
            class Customer:
                id: Annotated[BigInt | None, pk()]

        else:

            @ematix.table(schema="s")
            class Customer:
                id: Annotated[BigInt, pk(), nullable()]


def test_autoincrement_needs_an_integer() -> None:
    with _raises(DefinitionError, "Customer.id: pk(autoincrement=True) needs an integer column"):

        @ematix.table(schema="s")
        class Customer:
            id: Annotated[Text, pk(autoincrement=True)]


def test_union_of_two_types() -> None:
    with _raises(DefinitionError, "Customer.id: a column has exactly one type"):

        @ematix.table(schema="s")
        class Customer:
            id: BigInt | Text


def test_column_default_values_are_refused() -> None:
    with _raises(DefinitionError, "Customer.email has a value ('x'); @ematix.table columns"):

        @ematix.table(schema="s")
        class Customer:
            id: Annotated[BigInt, pk()]
            email: Text = "x"  # type: ignore[assignment]


def test_no_columns() -> None:
    with _raises(DefinitionError, "@ematix.table on Empty: the class declares no columns"):

        @ematix.table(schema="s")
        class Empty:
            pass


def test_natural_key_and_dunder_together_are_refused() -> None:
    with _raises(DefinitionError, "Customer declares unique constraints twice"):

        @ematix.table(schema="s")
        class Customer:
            __unique_constraints__ = (("email",),)
            email: Annotated[Text, natural_key()]


def test_stacked_dataclass() -> None:
    with _raises(
        DefinitionError,
        "Customer is already decorated with @dataclass. @ematix.table provides "
        "field-collection on its own; remove @dataclass or use the imperative class "
        "X(ManagedTable) form instead.",
    ):

        @ematix.table(schema="s")
        @dataclasses.dataclass
        class Customer:
            id: Annotated[BigInt, pk()]


def test_stacked_attrs() -> None:
    with _raises(
        DefinitionError,
        "Customer is already decorated with @attrs.define. @ematix.table provides "
        "field-collection on its own; remove @attrs.define or use the imperative class "
        "X(ManagedTable) form instead.",
    ):

        @ematix.table(schema="s")
        @attrs.define
        class Customer:
            id: Annotated[BigInt, pk()]


def test_stacked_pydantic() -> None:
    with _raises(
        DefinitionError,
        "Customer is already a Pydantic BaseModel. @ematix.table provides field-collection "
        "on its own; remove BaseModel or use the imperative class X(ManagedTable) form "
        "instead.",
    ):

        @ematix.table(schema="s")
        class Customer(pydantic.BaseModel):
            model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
            id: Annotated[BigInt, pk()]


def test_imperative_and_decorated_together_are_refused() -> None:
    with _raises(DefinitionError, "Customer already subclasses ManagedTable"):

        @ematix.table(schema="s")
        class Customer(ManagedTable):
            __schema__ = "s"
            id = Column(BigInt(), nullable=False, primary_key=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "upsert"}, "@ematix.table on T: mode='upsert' is not a mode; use one of"),
        (
            {"mode": "SCD2"},
            "@ematix.table on T: mode='SCD2' is not a mode; use one of 'append', 'merge', "
            "'scd1', 'scd2'. Did you mean mode='scd2'?",
        ),
        ({"colour": "red"}, "@ematix.table on T: unknown option colour=; the options are"),
        ({"keys": ("nope",)}, "keys= names 'nope', which is not a column of the target"),
        ({"keys": 5}, "keys= must be a tuple of column names"),
        ({"ttl": 7}, "ttl= must be a positive datetime.timedelta"),
        ({"handle_deletes": "yes"}, "handle_deletes='yes' is not valid"),
        (
            {"mode": "merge", "event_timestamp_column": "ts"},
            "event_timestamp_column= applies to mode='scd2' only (mode is 'merge')",
        ),
        (
            {"handle_deletes": "hard", "incremental_column": "ts"},
            "handle_deletes='hard' needs a full source snapshot",
        ),
    ],
)
def test_table_defaults_are_validated(options: dict[str, object], message: str) -> None:
    with _raises(DefinitionError, message):

        @ematix.table(schema="s", **options)
        class T:
            id: Annotated[BigInt, pk()]
            ts: TimestampTZ


def test_tablename_in_the_body_counts_unless_name_contradicts_it() -> None:
    @ematix.table(schema="s")
    class Legacy:
        __tablename__ = "tbl_legacy"
        id: Annotated[BigInt, pk()]

    assert Legacy.__table_spec__.name == "tbl_legacy"
    with _raises(
        DefinitionError,
        "@ematix.table on Legacy: name='other' contradicts __tablename__ = 'tbl_legacy'",
    ):

        @ematix.table(schema="s", name="other")
        class Legacy:
            __tablename__ = "tbl_legacy"
            id: Annotated[BigInt, pk()]

    with _raises(DefinitionError, "schema='s' contradicts __schema__ = 'x' in the class body"):

        @ematix.table(schema="s")
        class Elsewhere:
            __schema__ = "x"
            id: Annotated[BigInt, pk()]


def test_schema_must_be_a_string() -> None:
    with _raises(DefinitionError, "@ematix.table on T: schema= must be a non-empty string"):

        @ematix.table(schema=3)
        class T:
            id: Annotated[BigInt, pk()]


def test_bad_marker_arguments() -> None:
    with _raises(DefinitionError, "natural_key() takes a non-empty group label"):
        natural_key("")
    with _raises(DefinitionError, "pk(autoincrement=) must be True or False"):
        pk(autoincrement="yes")  # type: ignore[arg-type]
