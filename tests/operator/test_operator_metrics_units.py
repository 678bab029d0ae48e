"""The operator's figures as pure functions of a resource (no cluster): schedule, due
time, fallbacks for a status written before lastFinishedRun, and the endpoint's config."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from ematix_flow_operator.config import OperatorConfig, parse_endpoint
from ematix_flow_operator.errors import ApiCallError, InvalidSpecError, TransientApiError
from ematix_flow_operator.metrics import figures_of_resource, reason_of

from ematix_flow._errors import ConfigurationError
from ematix_flow._metrics import watermark_timestamp


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _body(spec: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "data", "name": "orders", "creationTimestamp": status.pop(
            "created", "2026-11-29T10:00:00Z")},
        "spec": {"pipeline": "orders_sync", "schedule": "0 6 * * *", **(spec or {})},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], **status},
    }  # fmt: skip


def test_nothing_is_due_before_the_first_slot_after_creation() -> None:
    figures = figures_of_resource(_body(), now=_ts("2026-11-30T05:59:00"))
    assert figures.labels == {"namespace": "data", "name": "orders", "pipeline": "orders_sync"}
    assert figures.run_due_since is None
    assert figures.next_schedule == _ts("2026-11-30T06:00:00")
    later = figures_of_resource(_body(), now=_ts("2026-12-01T09:00:00"))
    assert later.run_due_since == _ts("2026-11-30T06:00:00")  # the first slot, not the latest


def test_a_success_moves_the_due_time_to_the_next_slot() -> None:
    body = _body(lastSuccessfulTime="2026-11-30T06:02:10Z")
    assert figures_of_resource(body, now=_ts("2026-11-30T12:00:00")).run_due_since is None
    due = figures_of_resource(body, now=_ts("2026-12-01T06:30:00")).run_due_since
    assert due == _ts("2026-12-01T06:00:00")


def test_the_time_zone_of_the_spec_is_the_schedule_s() -> None:
    body = _body({"timeZone": "Europe/Paris"})
    figures = figures_of_resource(body, now=_ts("2026-11-30T04:00:00"))
    assert figures.next_schedule == _ts("2026-11-30T05:00:00")  # 06:00 in Paris (UTC+1)


@pytest.mark.parametrize(
    "body",
    [
        _body({"suspend": True}),
        {**_body(), "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        _body({"schedule": "not a schedule"}),
    ],
    ids=["suspended", "not-ready", "unparsable"],
)
def test_no_schedule_series_when_it_cannot_run(body: dict[str, Any]) -> None:
    figures = figures_of_resource(body, now=_ts("2026-12-05T00:00:00"))
    assert figures.next_schedule is None and figures.run_due_since is None


def test_a_status_written_before_last_finished_run_still_shows_its_run() -> None:
    body = _body(
        lastRun={
            "jobName": "orders-1",
            "phase": "Failed",
            "completionTime": "2026-11-30T06:00:09Z",
            "durationSeconds": 9.0,
            "targets": [{"target": "wh.o", "status": "failed", "rowsInserted": 5}],
        },
        consecutiveFailures=2,
    )
    figures = figures_of_resource(body, now=_ts("2026-11-30T07:00:00"))
    assert figures.last_run == _ts("2026-11-30T06:00:09")
    assert (figures.last_run_success, figures.consecutive_failures) == (False, 2)
    assert figures.targets["wh.o"].last_rows["inserted"] == 0  # rolled back
    running = _body(lastRun={"jobName": "orders-2", "phase": "Running"})
    assert figures_of_resource(running, now=0).last_run is None


def test_reasons_and_endpoints() -> None:
    assert reason_of(InvalidSpecError("InvalidSchedule", "x")) == "InvalidSchedule"
    assert reason_of(ApiCallError("x", status=403)) == "ApiError"
    assert reason_of(TransientApiError("x")) == "TransientApiError"
    assert parse_endpoint("http://[::]:9090/metrics") == ("::", 9090, "/metrics")
    for bad in ("https://0.0.0.0:9090/metrics", "http://0.0.0.0/metrics", "9090", "off"):
        with pytest.raises(ConfigurationError, match="http://HOST:PORT/PATH"):
            OperatorConfig(all_namespaces=True, metrics_endpoint=bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29 06:00:00+00", "2026-11-29T06:00:00"),
        ("2026-11-29 06:00:00.5+05:30", "2026-11-29T00:30:00.5"),
        ("2026-11-29 06:00:00", "2026-11-29T06:00:00"),  # timestamp without zone: UTC
        ("2026-11-29", "2026-11-29T00:00:00"),
        ("20261129", None),  # an integer watermark is no time
        ("42", None),
        ("", None),
        (None, None),
    ],
)
def test_watermark_timestamps(text: str | None, expected: str | None) -> None:
    assert watermark_timestamp(text) == (_ts(expected) if expected else None)
