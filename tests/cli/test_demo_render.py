"""The demo's tables on an 80-column terminal: long target names and big counts wrap in
their cells, in one number format, and are never cut."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from ematix_flow._cli.demo import _render_counts, _render_run
from tests.cli.tables import boxed_column, column_cells

LONG = "analytics_warehouse_layer.customer_lifetime_value_snapshot_v2"


def test_run_and_count_tables_keep_every_character_at_80_columns() -> None:
    result = SimpleNamespace(
        target=LONG,
        mode="scd2",
        path="cross_db",
        ok=True,
        status="succeeded",
        error=None,
        rows_inserted=1_000_000,
        rows_updated=25_000,
        rows_deleted=0,
        rows_unchanged=3_500_000,
        duration_s=12.5,
    )
    run, counts = io.StringIO(), io.StringIO()
    _render_run(_console(run), "fanout", SimpleNamespace(results=[result], error=None), 13.0)
    _render_counts(
        _console(counts), [SimpleNamespace(table=LONG, mode="scd2", rows=4_525_000, current=None)]
    )
    for text in (run.getvalue(), counts.getvalue()):
        assert "…" not in text
        assert max(len(line) for line in text.splitlines()) <= 80
    assert column_cells(run.getvalue(), "target", "mode") == LONG
    assert boxed_column(counts.getvalue(), 0) == LONG
    for number in ("1,000,000", "25,000", "3,500,000", "12.50"):
        assert f" {number} " in run.getvalue()  # whole, on one line
    assert " 4,525,000 " in counts.getvalue()


def _console(file: io.StringIO) -> Console:
    return Console(file=file, width=80, no_color=True, highlight=False)
