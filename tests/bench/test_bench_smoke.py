"""The benchmark cannot rot: ``python -m bench`` runs end to end at a tiny N.

No timing is asserted (the machine is shared); what is checked is that every
measurement of the issue's table is produced, that the engine's targets matched the
hand-written ones (the bench raises ``BenchError`` otherwise) and that the printed table
holds every row.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.run import format_table, main

pytestmark = pytest.mark.db


def test_bench_runs_at_tiny_n(
    pg_server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    report = main(["--quick", "--rows", "400", "--server-url", pg_server_url, "--json", str(out)])
    assert report["rows"] == 400 and report["changed_rows"] == 40
    # CHECKPOINT between measurements when the role may (superuser, pg_checkpoint)
    assert isinstance(report["checkpoints"], bool)
    labels = [c["measurement"] for c in report["comparisons"]]
    assert labels == [
        "cross-DB merge, initial",
        "cross-DB merge, 10% re-sync",
        "same-DB scd2, initial",
        "same-DB scd2, 10% changed",
        "same-DB merge, initial",
        "same-DB merge, 10% changed",
        "peak RSS, merge of 5N",
        "row hash, source table",
        "row hash, cross-DB stage",
    ]
    for c in report["comparisons"]:
        assert c["ours"] > 0 and c["limit"] > 0
        # the row hash is reported against the previous one, with no target to meet
        assert isinstance(c.get("met"), bool) or c["measurement"].startswith("row hash")
    # the engine's own counts, as reported by pipeline.sync in the worker
    ms = report["measurements"]
    assert ms["merge_initial"]["details"][0]["result"]["rows_inserted"] == 400
    assert ms["merge_resync"]["details"][0]["result"]["rows_updated"] == 40
    assert ms["scd2_changed"]["details"][0]["result"]["rows_updated"] == 40
    same = ms["merge_same_changed"]["details"][0]["result"]
    assert (same["rows_updated"], same["rows_unchanged"]) == (40, 360)
    printed = capsys.readouterr().out
    assert printed.strip() == format_table(report).strip()
    assert json.loads(out.read_text())["comparisons"] == json.loads(
        json.dumps(report["comparisons"])
    )
