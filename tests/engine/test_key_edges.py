"""Keys at their edges, on both paths and in every keyed mode they apply to.

What is proved:

1. A merge/scd1/scd2 target whose resolved keys include a nullable column (a plain
   ``Column(Text())`` unique key, an ``Annotated[Text | None, natural_key()]``, or
   ``keys=`` naming a nullable column) is refused at plan time with a
   ``DefinitionError`` naming the column, saying it may be NULL and giving the fix;
   nothing is created. The preview lists it as a problem. A NULL arriving in a key
   column declared NOT NULL keeps the ``SourceError`` naming the column.
2. Duplicate keys in a source batch fail whatever the row order (``ORDER BY name ASC``
   and ``DESC``, exact duplicate rows of an unchanged key): ``SourceError`` with the
   count and a sample key; target rows and stored watermark untouched. A hypothesis
   test shuffles the rows and the position of the duplicate.
3. ``mode="append"`` into a class that declares a primary key and unique constraints
   keeps every batch: the physical constraints end with ``_batch_id``, two runs give
   twice the rows, and the preview explains it.
4. Two rows that swap (or rotate) a unique value converge in merge and scd1 when the
   keys are the primary key; when the natural key wins the key resolution, the preview
   says the primary-key column is updated.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ematix_flow import ematix, natural_key, pipeline, pk
from ematix_flow._core import connect
from ematix_flow._engine.options import TargetOptions
from ematix_flow._engine.plan import plan
from ematix_flow._errors import DefinitionError, SourceError
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable, table_spec
from ematix_flow.types import BigInt, Column, Text

pytestmark = [
    pytest.mark.db,
    pytest.mark.filterwarnings("ignore:Pipeline .*:UserWarning"),
]

PATHS = ["same_db", "cross_db"]
KEYED = ["merge", "scd1", "scd2"]
OFFLINE = connect("postgresql://app:s3cret@db.invalid:5432/wh")


def sync(env: Any, target: Any, query: str, path: str, mode: str, **kw: Any) -> dict[str, Any]:
    conn = env.source if path == "cross_db" else env.warehouse
    return pipeline.sync(
        target=target,
        source=Source.postgres_query(conn, query),
        target_connection=env.warehouse,
        mode=mode,
        force_path=path,
        **kw,
    )


def on_source(env: Any, path: str, *statements: str) -> None:
    """Run statements where the source is read from: the warehouse itself for same-DB."""
    (env.src if path == "cross_db" else env.wh)(*statements)


def offline_plan(table: Any, mode: str, **kw: Any) -> Any:
    src = Source.postgres_query(OFFLINE, "SELECT * FROM app.t")
    opts = TargetOptions(table=table_spec(table), mode=mode, **kw)
    return plan(opts, src, OFFLINE, pipeline="p", inspect=False)


def exists(env: Any, table: Any) -> bool:
    name = table_spec(table).qualified_name
    return env.rows("SELECT to_regclass(%s) IS NOT NULL", params=(name,))[0][0]


# --- 1. nullable keys are refused --------------------------------------------------------


class UniqueNullable(ManagedTable):
    """The unique constraint (the resolved key) is on a column that may be NULL."""

    __schema__ = "wh"
    __tablename__ = "unique_nullable"
    __unique_constraints__ = (("email",),)
    email = Column(Text())
    name = Column(Text())


class UniqueNotNull(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "unique_not_null"
    __unique_constraints__ = (("email",),)
    email = Column(Text(), nullable=False)
    name = Column(Text())


@ematix.table(schema="wh")
class NaturalNullable:
    id: Annotated[BigInt, pk()]
    email: Annotated[Text | None, natural_key()]
    name: Text | None


@ematix.table(schema="wh")
class NaturalNotNull:
    id: Annotated[BigInt, pk()]
    email: Annotated[Text, natural_key()]
    name: Text | None


class ExplicitNullable(ManagedTable):
    """No declared key: ``keys=("id",)`` names a nullable column."""

    __schema__ = "wh"
    __tablename__ = "explicit_nullable"
    id = Column(BigInt())
    name = Column(Text())


class ExplicitNotNull(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "explicit_not_null"
    id = Column(BigInt(), nullable=False)
    name = Column(Text())


# case → (nullable table, NOT NULL twin, key column, sync options, source rows)
NULLABLE_CASES: dict[str, tuple[Any, Any, str, dict[str, Any], str]] = {
    "unique_column": (
        UniqueNullable,
        UniqueNotNull,
        "email",
        {},
        "(1, NULL, 'x'), (2, 'b@x', 'y')",
    ),
    "natural_key": (
        NaturalNullable,
        NaturalNotNull,
        "email",
        {},
        "(1, NULL, 'x'), (2, 'b@x', 'y')",
    ),
    "explicit_keys": (
        ExplicitNullable,
        ExplicitNotNull,
        "id",
        {"keys": ("id",)},
        "(NULL, 'a@x', 'x'), (2, 'b@x', 'y')",
    ),
}


def assert_names_nullable_key(text: str, column: str) -> None:
    assert re.search(rf"\b{column}\b", text), text
    assert re.search(r"\bnull\b", text, re.IGNORECASE), text
    assert "NOT NULL" in text or "nullable=False" in text, text
    assert "keys=" in text, text


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(NULLABLE_CASES))
def test_nullable_key_is_refused_before_writing(env: Any, case: str, path: str) -> None:
    nullable, not_null, column, kw, rows = NULLABLE_CASES[case]
    on_source(
        env,
        path,
        "CREATE TABLE s (id bigint, email text, name text)",
        f"INSERT INTO s VALUES {rows}",
    )
    query = "SELECT id, email, name FROM s"
    for mode in KEYED:
        # Declared NOT NULL: the NULL that arrives is today's clear source error.
        with pytest.raises(SourceError) as err:
            sync(env, not_null, query, path, mode, **kw)
        assert f"column '{column}'" in str(err.value) and "NULL" in str(err.value), mode

        # May be NULL: refused while planning, before the table exists.
        try:
            result = sync(env, nullable, query, path, mode, **kw)
        except DefinitionError as exc:
            assert_names_nullable_key(str(exc), column)
        else:
            pytest.fail(f"{mode}: key column {column!r} may be NULL, yet the sync ran: {result}")
        assert not exists(env, nullable), mode


@pytest.mark.parametrize("case", list(NULLABLE_CASES))
def test_preview_lists_the_nullable_key_as_a_problem(case: str) -> None:
    nullable, not_null, column, kw, _rows = NULLABLE_CASES[case]
    for mode in KEYED:
        p = offline_plan(nullable, mode, **kw)
        found = [x.message for x in p.problems if re.search(rf"\b{column}\b", x.message)]
        assert found, (mode, p.problems)
        assert_names_nullable_key(found[0], column)
        twin = offline_plan(not_null, mode, **kw)
        assert not [x for x in twin.problems if "NULL" in x.message.upper()], twin.problems


# --- 2. duplicate keys fail in any order ---------------------------------------------------


def item_table(name: str) -> type[ManagedTable]:
    """``wh.<name>``: ``id`` primary key, a value, and ``seq`` for the watermark."""
    return type(
        "Item",
        (ManagedTable,),
        {
            "__schema__": "wh",
            "__tablename__": name,
            "id": Column(BigInt(), nullable=False, primary_key=True),
            "name": Column(Text()),
            "seq": Column(BigInt(), nullable=False),
        },
    )


ITEM_SOURCE = "SELECT id, name, seq FROM s ORDER BY pos"


def load_items(env: Any, path: str, rows: list[tuple[int, str]]) -> None:
    """The source batch, read in exactly this order (``ORDER BY pos``)."""
    on_source(
        env,
        path,
        "DROP TABLE IF EXISTS s",
        "CREATE TABLE s (pos int, id bigint, name text, seq bigint)",
    )
    for pos, (key, name) in enumerate(rows):
        (env.src if path == "cross_db" else env.wh)(
            "INSERT INTO s VALUES (%s, %s, %s, 1)", params=(pos, key, name)
        )


def target_state(env: Any, table: Any) -> tuple[list[Any], list[Any]]:
    """Every target row (all columns, and its row version) and its stored watermark."""
    name = table_spec(table).qualified_name
    rows = env.rows(f"SELECT t::text, t.xmin::text FROM {name} AS t ORDER BY 1")
    marks = env.rows(
        "SELECT w::text FROM ematix_flow.watermarks AS w WHERE target = %s", params=(name,)
    )
    assert marks, "the first run stored a watermark"
    return rows, marks


def assert_duplicates_refused(
    env: Any, table: Any, path: str, mode: str, rows: list[tuple[int, str]], key: int, what: str
) -> None:
    load_items(env, path, rows)
    before = target_state(env, table)
    try:
        result = sync(env, table, ITEM_SOURCE, path, mode, incremental_column="seq")
    except SourceError as exc:
        text = str(exc)
    else:
        pytest.fail(f"{what}: a batch with a duplicated key was applied: {result}")
    assert "duplicated key" in text, (what, text)
    assert re.search(r"\b1 duplicated key", text), (what, text)
    assert f"({key})" in text, (what, text)
    assert target_state(env, table) == before, what
    last = env.rows(
        "SELECT status FROM ematix_flow.run_history WHERE target = %s ORDER BY id DESC LIMIT 1",
        params=(table_spec(table).qualified_name,),
    )
    assert last == [("failed",)], what


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", KEYED)
def test_duplicate_keys_fail_in_any_order(env: Any, mode: str, path: str) -> None:
    item = item_table("item")
    load_items(env, path, [(1, "a"), (2, "b")])
    first = sync(env, item, ITEM_SOURCE, path, mode, incremental_column="seq")
    assert first["rows_inserted"] == 2
    variants = {
        "the unchanged row first (name ASC)": [(1, "a"), (1, "z"), (2, "b")],
        "the changed row first (name DESC)": [(1, "z"), (1, "a"), (2, "b")],
        "the same row twice, key unchanged": [(1, "a"), (2, "b"), (1, "a")],
    }
    for what, rows in variants.items():
        assert_duplicates_refused(env, item, path, mode, rows, 1, f"{mode}/{path}: {what}")
    current = "is_current" if mode == "scd2" else "true"
    assert env.rows(f"SELECT id, name FROM wh.item WHERE {current} ORDER BY id") == [
        (1, "a"),
        (2, "b"),
    ]


@st.composite
def shuffled_batches(draw: Any) -> tuple[dict[int, str], list[tuple[int, str]], int]:
    """A target's rows, and a shuffled source batch holding them plus one more row for
    one of their keys (the same values or other ones), anywhere in the batch."""
    base = draw(st.dictionaries(st.integers(1, 6), st.sampled_from("abz"), min_size=1, max_size=4))
    key = draw(st.sampled_from(sorted(base)))
    extra = (key, draw(st.sampled_from("abz")))
    batch = draw(st.permutations([*base.items(), extra]))
    return base, list(batch), key


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    case=shuffled_batches(),
    mode=st.sampled_from(KEYED),
    path=st.sampled_from(PATHS),
)
def test_duplicates_fail_whatever_the_order(
    env: Any, case: tuple[dict[int, str], list[tuple[int, str]], int], mode: str, path: str
) -> None:
    base, batch, key = case
    # every example has a target table of its own (the databases are shared)
    item = item_table(f"item_{uuid.uuid4().hex[:10]}")
    load_items(env, path, sorted(base.items()))
    sync(env, item, ITEM_SOURCE, path, mode, incremental_column="seq")
    assert_duplicates_refused(env, item, path, mode, batch, key, f"{mode}/{path}: {batch}")


# --- 3. append keeps every batch when the class declares keys --------------------------


class EventLog(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "event_log"
    __unique_constraints__ = (("code",),)
    id = Column(BigInt(), nullable=False, primary_key=True)
    code = Column(Text(), nullable=False)
    payload = Column(Text())


@ematix.table(schema="wh")
class Signup:
    id: Annotated[BigInt, pk()]
    code: Annotated[Text, natural_key()]
    payload: Text | None


CONSTRAINT_COLUMNS = """
    SELECT c.contype::text, array_agg(a.attname::text ORDER BY k.ord)
    FROM pg_constraint AS c
    CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
    WHERE c.conrelid = %s::regclass AND c.contype IN ('p', 'u')
    GROUP BY c.oid, c.contype ORDER BY 1, 2
"""
UNIQUE_INDEX_COLUMNS = """
    SELECT array_agg(a.attname::text ORDER BY k.ord)
    FROM pg_index AS i
    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = %s::regclass AND i.indisunique
    GROUP BY i.indexrelid ORDER BY 1
"""


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("table", [EventLog, Signup], ids=["managed_table", "decorated"])
def test_append_into_a_keyed_class_keeps_every_batch(env: Any, table: Any, path: str) -> None:
    name = table_spec(table).qualified_name
    on_source(
        env,
        path,
        "CREATE TABLE s (id bigint, code text, payload text)",
        "INSERT INTO s VALUES (1, 'a', 'x'), (2, 'b', NULL), (3, 'c', 'z')",
    )
    query = "SELECT id, code, payload FROM s"
    for _run in range(2):
        assert sync(env, table, query, path, "append")["rows_inserted"] == 3
    assert env.rows(f"SELECT count(*), count(DISTINCT _batch_id) FROM {name}") == [(6, 2)]
    assert env.rows(CONSTRAINT_COLUMNS, params=(name,)) == [
        ("p", ["id", "_batch_id"]),
        ("u", ["code", "_batch_id"]),
    ]
    # no unique index that would refuse the second batch
    for columns in env.rows(UNIQUE_INDEX_COLUMNS, params=(name,)):
        assert columns[0][-1] == "_batch_id", columns


@pytest.mark.parametrize("table", [EventLog, Signup], ids=["managed_table", "decorated"])
def test_append_preview_explains_the_batch_id_in_the_keys(table: Any) -> None:
    p = offline_plan(table, "append")
    reasons = [d.reason for d in p.decisions if "_batch_id" in d.reason]
    assert reasons, [d.to_dict() for d in p.decisions]


# --- 4. unique swaps converge ------------------------------------------------------------


@ematix.table(schema="wh")
class Account:
    id: Annotated[BigInt, pk()]
    email: Annotated[Text, natural_key()]
    name: Text | None


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", ["merge", "scd1"])
def test_swapped_unique_values_converge(env: Any, mode: str, path: str) -> None:
    on_source(
        env,
        path,
        "CREATE TABLE s (id bigint, email text, name text)",
        "INSERT INTO s VALUES (1, 'a@x', 'Ann'), (2, 'b@x', 'Ben'), (3, 'c@x', 'Cy')",
    )
    query = "SELECT id, email, name FROM s"

    def run() -> dict[str, Any]:
        return sync(env, Account, query, path, mode, keys=("id",))

    def accounts() -> list[tuple[Any, ...]]:
        return env.rows("SELECT id, email, name FROM wh.account ORDER BY id")

    assert run()["rows_inserted"] == 3
    # users 1 and 2 swap e-mails
    on_source(
        env,
        path,
        "UPDATE s SET email = CASE id WHEN 1 THEN 'b@x' ELSE 'a@x' END WHERE id IN (1, 2)",
    )
    swapped = run()
    assert (swapped["status"], swapped["rows_updated"]) == ("succeeded", 2)
    assert accounts() == [(1, "b@x", "Ann"), (2, "a@x", "Ben"), (3, "c@x", "Cy")]
    # all three rotate
    on_source(
        env,
        path,
        "UPDATE s SET email = CASE id WHEN 1 THEN 'c@x' WHEN 2 THEN 'b@x' ELSE 'a@x' END",
    )
    assert run()["rows_updated"] == 3
    assert accounts() == [(1, "c@x", "Ann"), (2, "b@x", "Ben"), (3, "a@x", "Cy")]
    assert run()["rows_updated"] == 0  # converged: nothing left to write


@pytest.mark.parametrize("mode", ["merge", "scd1"])
def test_preview_says_the_primary_key_is_updated_when_the_natural_key_wins(mode: str) -> None:
    p = offline_plan(Account, mode)
    assert p.keys == ("email",) and "id" in p.update_columns
    texts = [*p.warnings, *(d.reason for d in p.decisions)]
    said = [
        t
        for t in texts
        if re.search(r"\bid\b", t)
        and re.search(r"primary|\bpk\b", t, re.IGNORECASE)
        and re.search(r"updat", t, re.IGNORECASE)
    ]
    assert said, texts
