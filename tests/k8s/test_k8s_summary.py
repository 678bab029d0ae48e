"""The run summary left in the termination message: written, bounded, secret-free."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ematix_flow._k8s import model
from ematix_flow._k8s.summary import (
    MAX_BYTES,
    TERMINATION_MESSAGE_ENV,
    build_summary,
    encode_summary,
    parse_termination_summary,
    status_targets,
    write_termination_summary,
)

pytestmark = pytest.mark.k8s


@dataclass(frozen=True)
class FakeReport:
    """The shape of a RunReport as `flow run` hands it over: anything with to_dict()."""

    pipeline: str
    ok: bool
    results: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "action": "run",
            "ok": self.ok,
            "error": None,
            "targets": self.results,
        }


def _result(i: int, *, status: str = "succeeded", error: str | None = None) -> dict[str, Any]:
    return {
        "target": f"warehouse.table_{i:03d}",
        "mode": "merge",
        "status": status,
        "rows_inserted": 10 * i,
        "rows_updated": i,
        "rows_deleted": 0,
        "error": error,
        "duration_s": 0.1234567 * i,
        "plan": {"steps": ["INSERT INTO …"]},
        "connection": "postgresql://app:hunter2@db.internal/wh",
    }


SUCCESS = FakeReport("customer_sync", True, [_result(1), _result(2)])
FAILURE = FakeReport(
    "customer_sync",
    False,
    [
        _result(1),
        _result(
            2,
            status="failed",
            error='connection to "postgresql://app:hunter2@db.internal:5432/wh" failed',
        ),
    ],
)


def test_a_plain_dict_with_results_is_accepted_and_a_pipeline_error_kept() -> None:
    data = {"pipeline": "p", "action": "run", "ok": False, "error": "body raised: boom"}
    summary = build_summary({**data, "results": [_result(1)]})
    assert summary["totals"]["targets"] == 1
    assert summary["error"] == "body raised: boom"
    assert parse_termination_summary(encode_summary(summary))["message"] == "body raised: boom"


def test_nothing_is_written_outside_a_pod(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(TERMINATION_MESSAGE_ENV, raising=False)
    assert write_termination_summary(SUCCESS) is None
    assert list(tmp_path.iterdir()) == []


def test_success_summary_is_written_where_the_variable_points(tmp_path, monkeypatch) -> None:
    path = tmp_path / "termination-log"
    monkeypatch.setenv(TERMINATION_MESSAGE_ENV, str(path))
    assert write_termination_summary(SUCCESS) == path
    summary = parse_termination_summary(path.read_text())
    assert summary["ok"] is True
    assert summary["pipeline"] == "customer_sync"
    assert summary["truncated"] is False
    assert summary["totals"] == {
        "targets": 2,
        "failed": 0,
        "rows_inserted": 30,
        "rows_updated": 3,
        "rows_deleted": 0,
    }
    first = summary["targets"][0]
    assert first["target"] == "warehouse.table_001"
    assert first["rows_inserted"] == 10
    assert first["duration_s"] == 0.123
    assert "plan" not in first and "connection" not in first


def test_failure_summary_keeps_the_error_without_the_password(tmp_path) -> None:
    path = tmp_path / "msg"
    write_termination_summary(FAILURE, path=path)
    text = path.read_text()
    assert "hunter2" not in text
    summary = parse_termination_summary(text)
    assert summary["ok"] is False
    assert summary["totals"]["failed"] == 1
    failed = summary["targets"][1]
    assert failed["status"] == "failed"
    assert "connection to" in failed["error"]
    assert "app:***@db.internal" in failed["error"]


def test_errors_quoting_the_pods_own_dsn_are_masked(monkeypatch) -> None:
    dsn = "host=db.internal user=app password=S3cr3t-pw dbname=wh"
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", dsn)
    report = FakeReport(
        "p", False, [_result(1, status="failed", error="auth failed for S3cr3t-pw on db")]
    )
    text = encode_summary(build_summary(report))
    assert "S3cr3t-pw" not in text
    assert "***" in text


def test_unwritable_path_does_not_raise(tmp_path, capsys) -> None:
    assert write_termination_summary(SUCCESS, path=tmp_path / "missing" / "msg") is None
    assert "could not write the run summary" in capsys.readouterr().err


def test_many_targets_stay_under_the_limit_and_failures_survive() -> None:
    results = [_result(i, error=None) for i in range(300)]
    results[7] = _result(7, status="failed", error="duplicate key 'é' " * 400)
    results[250] = _result(250, status="failed", error="x" * 5000)
    full = build_summary(FakeReport("feature_views", False, results))
    assert len(json.dumps(full)) > MAX_BYTES
    text = encode_summary(full)
    assert len(text.encode("utf-8")) <= MAX_BYTES
    summary = parse_termination_summary(text)
    assert summary["truncated"] is True
    assert summary["ok"] is False
    assert summary["totals"]["targets"] == 300
    assert summary["totals"]["failed"] == 2
    assert summary["totals"]["rows_inserted"] == sum(r["rows_inserted"] for r in results)
    kept = [t["target"] for t in summary["targets"]]
    assert {"warehouse.table_007", "warehouse.table_250"} <= set(kept)
    assert len(kept) > 2, "successful targets fill the room left"
    assert kept == sorted(kept), "kept targets stay in run order"
    one_more = json.loads(text)
    dropped = next(r for r in results if r["target"] not in kept)
    one_more["targets"].append(build_summary(FakeReport("x", True, [dropped]))["targets"][0])
    assert len(json.dumps(one_more, separators=(",", ":")).encode()) > MAX_BYTES


def test_long_errors_are_cut_before_targets_are_dropped() -> None:
    results = [_result(i, status="failed", error="e" * 3000) for i in range(3)]
    text = encode_summary(build_summary(FakeReport("p", False, results)))
    summary = parse_termination_summary(text)
    assert len(text.encode()) <= MAX_BYTES
    assert summary["truncated"] is True
    assert len(summary["targets"]) == 3
    assert all(t["error"].endswith("…") and len(t["error"]) < 3000 for t in summary["targets"])


def test_successful_targets_are_kept_while_they_fit() -> None:
    results = [_result(i) for i in range(60)]
    text = encode_summary(build_summary(FakeReport("p", True, results)))
    summary = parse_termination_summary(text)
    assert len(text.encode()) <= MAX_BYTES
    assert summary["truncated"] is True
    assert 10 < len(summary["targets"]) < 60
    assert summary["targets"][0]["target"] == "warehouse.table_000"


def test_a_small_summary_is_not_marked_truncated() -> None:
    text = encode_summary(build_summary(SUCCESS))
    assert json.loads(text)["truncated"] is False
    assert text == encode_summary(build_summary(SUCCESS))


@pytest.mark.parametrize("limit", [200, 600, 1500])
def test_any_limit_gives_valid_json_within_it(limit: int) -> None:
    results = [_result(i, status="failed", error="boom " * 50) for i in range(40)]
    text = encode_summary(build_summary(FakeReport("p" * 20, False, results)), limit=limit)
    assert len(text.encode()) <= limit
    assert json.loads(text)["totals"]["targets"] == 40


@pytest.mark.parametrize("text", [None, "", "Traceback (most recent call last):\n  ...", "[1,2]"])
def test_a_message_that_is_not_a_summary_is_kept_as_text(text: str | None) -> None:
    summary = parse_termination_summary(text)
    assert summary["ok"] is None
    assert summary["targets"] == []
    assert summary["message"] == ((text or "").strip() or None)


def test_status_targets_fit_the_status_model() -> None:
    summary = parse_termination_summary(encode_summary(build_summary(FAILURE)))
    targets = status_targets(summary)
    assert targets[1] == {
        "target": "warehouse.table_002",
        "mode": "merge",
        "status": "failed",
        "rowsInserted": 20,
        "rowsUpdated": 2,
        "rowsDeleted": 0,
        "error": summary["targets"][1]["error"],
    }
    last_run = model.LastRun.from_k8s({"phase": "Failed", "targets": targets})
    assert last_run.targets[0].rows_inserted == 10
