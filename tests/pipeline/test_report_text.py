"""A preview / dry-run report explains itself when printed or shown in a REPL or a
notebook (spec §3.5: ``customer_sync.preview()`` shows the plan), without a password."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import pytest

from ematix_flow import ematix, pk
from ematix_flow.types import BigInt, String, Text, TimestampTZ

PASSWORD = "Zq9-distinctive-pw"


@ematix.table(schema="warehouse")
class CustomerDim:
    customer_id: Annotated[BigInt, pk()]
    email: String[256]
    name: Text | None
    last_seen: TimestampTZ


@ematix.table(schema="warehouse", name="customer_log")
class CustomerLog:
    customer_id: BigInt
    email: String[256]


def declare(names: list[str], **kw: Any) -> Any:
    name = f"customer_sync_{uuid.uuid4().hex[:6]}"
    names.append(name)

    @ematix.pipeline(name=name, schedule="0 * * * *", **kw)
    def customer_sync(conn: Any) -> str:
        return "SELECT id AS customer_id, email, name, last_seen FROM source.users"

    return customer_sync


class Printer:
    """What IPython hands ``_repr_pretty_``."""

    def __init__(self) -> None:
        self.out: list[str] = []

    def text(self, s: str) -> None:
        self.out.append(s)


def test_preview_prints_the_plan_with_decisions_and_sql(
    names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No reachable database: the plan is still explained, the rest marked unknown.
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", f"postgresql://wh:{PASSWORD}@db.invalid/wh")
    customer_sync = declare(
        names, target=CustomerDim, mode="scd2", event_timestamp_column="last_seen"
    )
    report = customer_sync.preview()
    text = str(report)
    assert text.startswith(f"{customer_sync.name}   preview   targets: 1")
    for expected in (
        "✓ warehouse.customer_dim   mode=scd2   keys=(customer_id)   path=same_db",
        "keys: (customer_id)   [from pk()]",
        "compare_columns: (email, name)   [default: every non-key declared column except "
        "event_timestamp_column='last_seen']",
        "+ valid_from timestamp with time zone NOT NULL",
        "    customer_id bigint NOT NULL",
        "SQL plan (",
        'CREATE TABLE IF NOT EXISTS "warehouse"."customer_dim"',
        "unknown: ",
    ):
        assert expected in text, expected
    assert PASSWORD not in text
    assert repr(report) == text
    printer = Printer()
    report._repr_pretty_(printer, False)
    assert printer.out == [text]
    assert "RunReport(" not in text


def test_several_targets_print_one_line_each_unless_verbose(
    names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", f"postgresql://wh:{PASSWORD}@db.invalid/wh")
    sync = declare(
        names,
        targets=[
            ematix.target(CustomerDim, mode="scd2", event_timestamp_column="last_seen"),
            ematix.target(CustomerLog, mode="append"),
        ],
    )
    report = sync.preview()
    name = sync.name
    assert str(report).splitlines() == [
        f"{name}   preview   targets: 2   ok",
        "",
        "  ✓ warehouse.customer_dim   mode=scd2   keys=(customer_id)   path=same_db   planned",
        "  ✓ warehouse.customer_log   mode=append   keys=—   path=same_db   planned",
        "",
        "  .explain(verbose=True) for the plan of each target",
    ]
    assert report.explain(verbose=True).count("SQL plan (") == 2


@pytest.mark.db
def test_dry_run_prints_the_rows_each_statement_would_affect(
    dbs: Any, names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", dbs.warehouse_url)
    with dbs.connect("warehouse") as c:
        c.execute(
            "CREATE SCHEMA source; CREATE TABLE source.users (id bigint, email text, "
            "name text, last_seen timestamptz);"
            "INSERT INTO source.users VALUES (1, 'a@x', 'A', now()), (2, 'b@x', NULL, now())"
        )
        c.commit()
    customer_sync = declare(names, target=CustomerDim, mode="merge")
    text = str(customer_sync.dry_run())
    assert "dry run (rolled back)" in text
    assert "rows: inserted 2, updated 0, deleted 0, unchanged 0" in text
    # the table is new: the rows go straight in, and its key is built after them
    assert "load: insert into the empty target [load]   → rows: inserted 2, source_rows 2" in (text)
    assert "4. build the primary key and unique constraints [load]\n" in text
    # Rolled back: the target table was never created.
    with dbs.connect("warehouse") as c:
        found = c.execute("SELECT to_regclass('warehouse.customer_dim')").fetchone()
    assert found == (None,)


@pytest.mark.db
def test_a_failed_target_prints_its_error(
    dbs: Any, names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", dbs.warehouse_url)
    customer_sync = declare(names, target=CustomerDim, mode="merge")  # source.users is missing
    lines = str(customer_sync.dry_run()).splitlines()
    assert lines[0].endswith("targets: 1   FAILED")
    assert lines[2].startswith("  ✗ warehouse.customer_dim   mode=merge")
    assert lines[3].startswith("    error") and 'relation "source.users" does not exist' in lines[3]
    assert not any(line.startswith("    rows: ") for line in lines)
