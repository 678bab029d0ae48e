"""What counts as a change for the hashed modes (scd1, scd2): the compared columns'
canonical text, as the row hash sees it.

The statements skip hashing a row whose compared columns are all *equal* to the stored
ones — but only where equal values have one text (integers, text compared byte for
byte, numeric with a scale, timestamps…). For a type whose equal values may differ in
text (-0 and 0, 1.0 and 1.00 in an unscaled numeric, '1 day' and '24 hours', jsonb's
numbers), the hash still decides: each case below must be seen as the change it is.
"""

from __future__ import annotations

from typing import Any

import pytest

from ematix_flow import pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, DoublePrecision, Interval, Jsonb, Numeric, Text

pytestmark = pytest.mark.db

CASES = [
    # (type, its SQL, stored value, source value, changed?)
    (DoublePrecision(), "double precision", "0", "-0", True),
    (Numeric(), "numeric", "1.0", "1.00", True),
    (Interval(), "interval", "1 day", "24 hours", True),
    (Jsonb(), "jsonb", '{"a": 1.0}', '{"a": 1.00}', True),
    (Numeric(12, 2), "numeric(12,2)", "1.0", "1.00", False),  # stored as 1.00 both times
    (Text(), "text", "abc", "abc", False),
    (Text(), "text", "abc", "abC", True),
]


@pytest.mark.parametrize("mode", ["scd1", "scd2"])
@pytest.mark.parametrize(
    ("sql_type", "type_sql", "before", "after", "changed"),
    [c[:5] for c in CASES],
    ids=[f"{c[1]}:{c[2]}->{c[3]}" for c in CASES],
)
def test_a_change_is_a_change_of_text(
    env: Any, mode: str, sql_type: Any, type_sql: str, before: str, after: str, changed: bool
) -> None:
    env.wh(f"CREATE TABLE public.s (k bigint, v {type_sql}, w text)")
    env.wh(
        "INSERT INTO public.s VALUES (1, %s, 'x'), (2, '{}', 'y')"
        if type_sql == "jsonb"
        else "INSERT INTO public.s VALUES (1, %s, 'x'), (2, NULL, 'y')",
        params=(before,),
    )
    target = type(
        "Feature",
        (ManagedTable,),
        {
            "__schema__": "wh",
            "__tablename__": "f",
            "k": Column(BigInt(), nullable=False, primary_key=True),
            "v": Column(sql_type),
            "w": Column(Text()),
        },
    )

    def run() -> dict:
        return pipeline.sync(
            target=target,
            source=Source.postgres_query(env.warehouse, "SELECT k, v, w FROM public.s"),
            target_connection=env.warehouse,
            mode=mode,
        )

    assert run()["rows_inserted"] == 2
    env.wh("UPDATE public.s SET v = %s WHERE k = 1", params=(after,))
    second = run()
    assert (second["rows_updated"], second["rows_unchanged"]) == ((1, 1) if changed else (0, 2))
    stored = env.rows(
        "SELECT v::text FROM wh.f WHERE k = 1" + (" AND is_current" if mode == "scd2" else "")
    )
    want = env.rows(f"SELECT CAST(CAST(%s AS {type_sql}) AS text)", params=(after,))
    if changed:
        assert stored == want
