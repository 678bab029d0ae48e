"""The run summary a pipeline pod leaves in its termination message, and its parser.

``flow run`` calls :func:`write_termination_summary` with its run report when it ends.
In a pod rendered by :mod:`ematix_flow._k8s.cronjob` the variable
``EMATIX_FLOW_TERMINATION_MESSAGE_PATH`` points at ``/dev/termination-log`` (the
container's ``terminationMessagePath``); anywhere else it is unset and nothing is
written. Kubernetes keeps at most 4096 bytes of that file, so the summary is shrunk to
fit — errors cut short first, then per-target detail dropped — and always stays valid
JSON with ``"truncated": true`` when anything was cut. Error texts are redacted: no
DSN, no password.

The operator reads the message back from the pod's
``status.containerStatuses[].state.terminated.message`` with
:func:`parse_termination_summary` and fills the resource's ``status.lastRun`` with
:func:`status_targets`::

    summary = parse_termination_summary(message)
    summary["ok"], summary["totals"]["failed"]
    status_targets(summary)   # [{'target': 'warehouse.customer_dim', 'status': …}, …]

The summary format (version ``"v": 1``)::

    {"v": 1, "pipeline": "customer_sync", "action": "run", "ok": true,
     "totals": {"targets": 2, "failed": 0, "rows_inserted": 10, "rows_updated": 2,
                "rows_deleted": 0},
     "targets": [{"target": "warehouse.customer_dim", "mode": "merge",
                  "status": "succeeded", "rows_inserted": 10, "rows_updated": 2,
                  "rows_deleted": 0, "rows_unchanged": 5, "rows_expired": 0,
                  "watermark_after": "2026-11-29 06:00:00+00", "error": null,
                  "duration_s": 0.42}, …],
     "truncated": false}
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ematix_flow.config import ENV_PREFIX, redact_dsn

__all__ = [
    "MAX_BYTES",
    "TERMINATION_MESSAGE_ENV",
    "TERMINATION_MESSAGE_PATH",
    "build_summary",
    "encode_summary",
    "parse_termination_summary",
    "status_targets",
    "write_termination_summary",
]

#: Where ``flow run`` writes the summary; unset means "not in a pod": write nothing.
TERMINATION_MESSAGE_ENV = "EMATIX_FLOW_TERMINATION_MESSAGE_PATH"
#: The file the CronJob's container declares as its ``terminationMessagePath``.
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
#: Kubernetes truncates a termination message past this many bytes.
MAX_BYTES = 4096
SUMMARY_VERSION = 1

_TARGET_KEYS = (
    "target",
    "mode",
    "status",
    "rows_inserted",
    "rows_updated",
    "rows_deleted",
    "rows_unchanged",
    "rows_expired",
    "watermark_after",
    "error",
    "duration_s",
)
_COUNTS = ("rows_inserted", "rows_updated", "rows_deleted")
_MORE_COUNTS = ("rows_unchanged", "rows_expired")
#: A longer watermark is left out: a cut one would be a wrong value, not a short one.
_MAX_WATERMARK = 64
_FAILED = {"failed", "error", "interrupted"}
# Successive caps on each error's length while shrinking the summary.
_ERROR_CAPS = (1000, 300, 120, 40)


class _HasToDict(Protocol):
    def to_dict(self) -> Mapping[str, Any]: ...


def _env_secrets() -> list[tuple[str, str | None]]:
    """The DSNs this process was given (``EMATIX_FLOW_DSN*``) and their passwords."""
    found = []
    for key, value in os.environ.items():
        if key.startswith(ENV_PREFIX) and value:
            password = None
            try:
                from psycopg.conninfo import conninfo_to_dict

                password = conninfo_to_dict(value).get("password")
            except Exception:  # an unparsable DSN is still masked literally below
                password = None
            found.append((value, str(password) if password else None))
    return found


def _redact(text: str) -> str:
    for dsn, password in _env_secrets():
        text = text.replace(dsn, redact_dsn(dsn, password))
        if password:
            text = redact_dsn(text, password)
    return redact_dsn(text)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _target(result: Mapping[str, Any]) -> dict[str, Any]:
    entry = {key: result.get(key) for key in _TARGET_KEYS}
    entry["target"] = str(entry["target"]) if entry["target"] is not None else "?"
    entry["status"] = str(entry["status"]) if entry["status"] is not None else "unknown"
    for key in (*_COUNTS, *_MORE_COUNTS):
        entry[key] = _int_or_none(entry[key])
    watermark = entry["watermark_after"]
    entry["watermark_after"] = (
        str(watermark) if watermark is not None and len(str(watermark)) <= _MAX_WATERMARK else None
    )
    if entry["error"] is not None:
        entry["error"] = _redact(str(entry["error"]))
    duration = entry["duration_s"]
    entry["duration_s"] = round(float(duration), 3) if isinstance(duration, int | float) else None
    return entry


def build_summary(report: _HasToDict | Mapping[str, Any]) -> dict[str, Any]:
    """The full (not yet size-limited) summary of a run report.

    ``report`` is a ``RunReport`` (anything with ``to_dict()``) or that dict: pipeline,
    action, ok, error, targets (one mapping per target; ``results`` is accepted too).
    Only the fields of the format are kept — never a plan, a SQL text or a connection —
    and every error is redacted.
    """
    data = report if isinstance(report, Mapping) else report.to_dict()
    # RunReport.to_dict() calls the per-target list "targets"; "results" is accepted too.
    results = data.get("targets") if data.get("targets") is not None else data.get("results")
    targets = [_target(r) for r in results or ()]
    totals: dict[str, Any] = {
        "targets": len(targets),
        "failed": sum(1 for t in targets if t["status"] in _FAILED),
    }
    for key in _COUNTS:
        totals[key] = sum(t[key] or 0 for t in targets)
    error = data.get("error")
    summary: dict[str, Any] = {
        "v": SUMMARY_VERSION,
        "pipeline": str(data.get("pipeline") or ""),
        "action": str(data.get("action") or "run"),
        "ok": bool(data.get("ok")),
        "totals": totals,
        "targets": targets,
        "truncated": False,
    }
    if error:
        summary["error"] = _redact(str(error))
    return summary


def _dumps(summary: Mapping[str, Any]) -> str:
    return json.dumps(summary, separators=(",", ":"), ensure_ascii=False)


def _fits(text: str, limit: int) -> bool:
    return len(text.encode("utf-8")) <= limit


def _cut(text: str | None, cap: int) -> str | None:
    if text is None or len(text) <= cap:
        return text
    return text[: cap - 1] + "…"


def encode_summary(summary: Mapping[str, Any], *, limit: int = MAX_BYTES) -> str:
    """``summary`` as compact JSON of at most ``limit`` UTF-8 bytes.

    Shrinks step by step until it fits: errors cut to shorter and shorter prefixes;
    then targets dropped — successful ones before failed ones (the interesting ones),
    keeping as many as fit, in their original order. ``totals`` and the pipeline's
    outcome always survive, and ``"truncated": true`` says something was cut.
    """
    text = _dumps(summary)
    if _fits(text, limit):
        return text
    shrunk = dict(summary, truncated=True)
    for cap in _ERROR_CAPS:
        shrunk["targets"] = [dict(t, error=_cut(t.get("error"), cap)) for t in summary["targets"]]
        if "error" in summary:
            shrunk["error"] = _cut(summary["error"], cap)
        text = _dumps(shrunk)
        if _fits(text, limit):
            return text
    # Keep as many targets as fit, failed ones first, in their original order.
    targets = shrunk["targets"]
    ranked = sorted(range(len(targets)), key=lambda i: (targets[i].get("status") not in _FAILED, i))

    def keeping(count: int) -> str:
        kept = sorted(ranked[:count])
        return _dumps(dict(shrunk, targets=[targets[i] for i in kept]))

    low, high = 0, len(ranked)  # keeping(low) is tried last; find the largest count that fits
    while low < high:
        mid = (low + high + 1) // 2
        if _fits(keeping(mid), limit):
            low = mid
        else:
            high = mid - 1
    text = keeping(low)
    if _fits(text, limit):
        return text
    # Only a pathological pipeline name gets here; the outcome still fits.
    minimal = {
        "v": SUMMARY_VERSION,
        "pipeline": _cut(str(summary.get("pipeline", "")), 200),
        "action": summary.get("action"),
        "ok": summary.get("ok"),
        "totals": summary.get("totals"),
        "targets": [],
        "truncated": True,
    }
    return _dumps(minimal)


def write_termination_summary(
    report: _HasToDict | Mapping[str, Any], *, path: str | os.PathLike[str] | None = None
) -> Path | None:
    """Write the run summary where Kubernetes reads the termination message.

    The file is ``path``, else ``$EMATIX_FLOW_TERMINATION_MESSAGE_PATH``; when neither is
    set (not in a pod) nothing is written and ``None`` is returned. A file that cannot be
    written is reported on stderr and never changes the run's outcome.
    """
    target = path if path is not None else os.environ.get(TERMINATION_MESSAGE_ENV)
    if not target:
        return None
    text = encode_summary(build_summary(report))
    try:
        Path(target).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"ematix-flow: could not write the run summary to {target}: {exc}", file=sys.stderr)
        return None
    return Path(target)


def parse_termination_summary(text: str | None) -> dict[str, Any]:
    """Read a termination message back into a summary dict; never raises.

    A message that is not our JSON (the container died before writing it, and
    Kubernetes fell back to the log tail) gives ``{"v": None, "ok": None, "targets": [],
    "totals": None, "truncated": False, "message": <the text>}``: the caller still has
    something to show.
    """
    text = (text or "").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("v") != SUMMARY_VERSION:
        return {
            "v": None,
            "pipeline": None,
            "action": None,
            "ok": None,
            "totals": None,
            "targets": [],
            "truncated": False,
            "message": text[-1024:] or None,
        }
    targets = data.get("targets")
    data["targets"] = (
        [t for t in targets if isinstance(t, dict)] if isinstance(targets, list) else []
    )
    data.setdefault("truncated", False)
    data.setdefault("message", data.get("error"))
    return data


def status_targets(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The summary's targets in the resource's ``status.lastRun.targets`` shape."""
    out = []
    for t in summary.get("targets") or ():
        entry = {
            "target": str(t.get("target", "?")),
            "mode": t.get("mode"),
            "status": str(t.get("status", "unknown")),
            "rowsInserted": _int_or_none(t.get("rows_inserted")),
            "rowsUpdated": _int_or_none(t.get("rows_updated")),
            "rowsDeleted": _int_or_none(t.get("rows_deleted")),
            "rowsUnchanged": _int_or_none(t.get("rows_unchanged")),
            "rowsExpired": _int_or_none(t.get("rows_expired")),
            "watermark": t.get("watermark_after")
            if isinstance(t.get("watermark_after"), str)
            else None,
            "error": t.get("error"),
        }
        out.append({k: v for k, v in entry.items() if v is not None})
    return out
