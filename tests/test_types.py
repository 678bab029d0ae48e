from __future__ import annotations

import pickle

import pytest

from ematix_flow._errors import DefinitionError
from ematix_flow.types import (
    BigInt,
    Numeric,
    String,
    Text,
    parse_type,
    sql_type,
)


def test_bare_and_called_forms_normalize_to_the_same_value() -> None:
    assert sql_type(BigInt) == sql_type(BigInt()) == BigInt()
    assert sql_type(String[256]) == String(256)
    assert sql_type(Numeric[12, 2]) == Numeric(12, 2)
    assert String[256] is String[256]


def test_ddl_matches_postgres_format_type() -> None:
    assert String(256).ddl == "character varying(256)"
    assert Numeric(12, 2).ddl == "numeric(12,2)"
    assert Numeric(10).ddl == "numeric(10,0)"
    assert Numeric().ddl == "numeric"


def test_parse_type_reads_back_aliases_and_parameters() -> None:
    assert parse_type("int8") == BigInt()
    assert parse_type("character varying(40)") == String(40)
    assert parse_type("numeric(12,2)") == Numeric(12, 2)
    assert parse_type("text") == Text()
    assert parse_type("point") is None


@pytest.mark.parametrize(
    "build",
    [lambda: String(0), lambda: String("x"), lambda: Numeric(5, 6), lambda: Numeric(None, 2)],
)
def test_bad_parameters_raise_definition_error(build) -> None:
    with pytest.raises(DefinitionError):
        build()


def test_not_a_type_names_the_choices() -> None:
    with pytest.raises(DefinitionError, match="BigInt"):
        sql_type(int)


def test_types_are_named_by_their_public_module() -> None:
    # The types are defined in a private module below Column; reprs, help() and pickles
    # still name ematix_flow.types, where the spec imports them from.
    assert repr(BigInt) == "<class 'ematix_flow.types.BigInt'>"
    assert repr(String[256]) == "<class 'ematix_flow.types.String[256]'>"
    assert sql_type.__module__ == "ematix_flow.types"
    assert pickle.loads(pickle.dumps(String)) is String
