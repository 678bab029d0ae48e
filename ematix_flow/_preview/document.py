"""The preview / dry-run document: one plain, JSON-ready dict per pipeline report.

:func:`document` turns a :class:`~ematix_flow.pipeline.RunReport` of the ``preview`` or
``dry_run`` action into the document both renderings are made from — ``--format json``
prints it (:func:`to_json`), the text renderer (:mod:`.text`) draws it — so the two
cannot disagree. Its shape is versioned (:data:`SCHEMA_VERSION`), described by
``preview.schema.json`` beside this module and documented in ``docs/preview-json.md``.

Stable by construction: nothing run-dependent enters it (no timestamps, durations,
batch ids), keys keep a fixed order, so two previews of an unchanged pipeline and
unchanged databases are byte-identical. No password enters it either: connections are
described by name, host, port, database, user and origin only, and every string is
scrubbed of the passwords of the connections involved before it is returned.

Called by the ``flow preview`` / ``flow dry-run`` commands; imports no front-end library.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = ["SCHEMA_VERSION", "document", "schema", "to_json"]

#: Bumped when a field is removed or changes meaning; adding a field keeps the version.
SCHEMA_VERSION = 1

#: Per-target outcome: would the target succeed?
OK, FAILED, UNKNOWN, SKIPPED = "ok", "failed", "unknown", "skipped"


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of :func:`document`'s output."""
    from importlib import resources

    text = resources.files(__package__).joinpath("preview.schema.json").read_text("utf-8")
    return dict(json.loads(text))


def to_json(doc: dict[str, Any]) -> str:
    """The document as indented JSON text, ending in a newline (byte-stable)."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def document(report: Any, *, schedule: str | None = None) -> dict[str, Any]:
    """The preview or dry-run ``report`` (a ``RunReport``) as a plain dict.

    Example::

        doc = document(pipeline.preview("customer_sync"), schedule="0 * * * *")
        doc["targets"][0]["plan"]["keys"]      # {'columns': [...], 'reason': '[from …]'}
    """
    action = report.action
    if action not in ("preview", "dry_run"):
        raise ValueError(f"document() renders a preview or dry_run report, not {action!r}")
    targets = [_target(r, action) for r in report.results]
    ok = report.error is None and all(t["outcome"] == OK for t in targets)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "action": action,
        "pipeline": report.pipeline,
        "schedule": schedule,
        "ok": ok,
        "error": report.error,
        "targets": targets,
    }
    return _scrub(doc, _passwords(report))


# --- one target --------------------------------------------------------------------------


def _target(result: Any, action: str) -> dict[str, Any]:
    plan = result.plan
    dry = action == "dry_run"
    return {
        "target": result.target,
        "mode": result.mode,
        "outcome": _outcome(result, action),
        "error": result.error or _problems_text(plan, action),
        "path": plan.path if plan is not None else result.path,
        "connections": {
            "target": _connection(plan.target_conn_obj) if plan is not None else None,
            "source": _connection(plan.source_conn_obj) if plan is not None else None,
        },
        "plan": _plan(plan, result if dry else None),
        "rows": _rows(result) if dry and result.status == "succeeded" else None,
    }


def _outcome(result: Any, action: str) -> str:
    if result.status == "skipped":
        return SKIPPED
    if result.status == "failed":
        return FAILED
    plan = result.plan
    if action == "preview" and plan is not None:
        if plan.problems:
            return FAILED
        if plan.unknown:
            return UNKNOWN
    return OK


def _problems_text(plan: Any, action: str) -> str | None:
    if action != "preview" or plan is None or not plan.problems:
        return None
    return "\n".join(p.message for p in plan.problems)


def _connection(conn: Any) -> dict[str, Any] | None:
    if conn is None:
        return None
    return {
        "name": getattr(conn, "name", None),
        "describe": _call_str(conn, "describe"),
        "host": getattr(conn, "host", None),
        "port": getattr(conn, "port", None),
        "database": getattr(conn, "dbname", None),
        "user": getattr(conn, "user", None),
        "origin": getattr(conn, "origin", None),
    }


def _call_str(obj: Any, method: str) -> str | None:
    fn = getattr(obj, method, None)
    return str(fn()) if callable(fn) else None


def _plan(plan: Any, result: Any | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    decisions = {d.topic: d for d in plan.decisions}

    def chosen(topic: str, columns: Iterable[str]) -> dict[str, Any] | None:
        d = decisions.get(topic)
        if d is None:
            return None
        return {"columns": list(columns), "reason": d.reason}

    path = decisions.get("path")
    watermark = None
    if plan.incremental_column:
        w = decisions.get("watermark")
        watermark = {
            "column": plan.incremental_column,
            "value": plan.watermark_before,
            "reason": w.reason if w is not None else None,
        }
    executed = list(result.steps) if result is not None else []
    failed = getattr(result, "failed_step", None)
    steps = []
    for i, step in enumerate(plan.steps):
        done = executed[i] if i < len(executed) else None
        if result is None:
            status = "planned"
        elif done is not None:
            status = "executed"
        elif i == len(executed) and failed == step.label:
            status = "failed"
        else:
            status = "not_executed"
        steps.append(
            {
                "label": step.label,
                "kind": step.kind,
                "sql": step.sql,
                "note": step.note,
                "status": status,
                "rows": _json_rows(done.rows) if done is not None else None,
            }
        )
    return {
        "source": {"label": plan.source, "sql": plan.source_sql},
        "path_reason": path.reason if path is not None else None,
        "keys": chosen("keys", plan.keys),
        "compare_columns": chosen("compare_columns", plan.compare_columns),
        "update_columns": chosen("update_columns", plan.update_columns),
        "handle_deletes": plan.handle_deletes,
        "columns": [
            {
                "name": c["name"],
                "type": c["type"],
                "nullable": bool(c["nullable"]),
                "framework": bool(c["framework"]),
                "key": c["name"] in plan.keys,
            }
            for c in plan.columns
        ],
        "table_exists": plan.table_exists,
        "watermark": watermark,
        "drift": [
            {
                "change": d["change"],
                "additive": bool(d["additive"]),
                "action": "apply" if d["additive"] else "refuse",
            }
            for d in plan.drift
        ],
        "decisions": [_decision(d) for d in plan.decisions],
        "problems": [{"kind": p.kind, "message": p.message} for p in plan.problems],
        "warnings": list(plan.warnings),
        "unknown": list(plan.unknown),
        "steps": steps,
    }


def _decision(d: Any) -> dict[str, Any]:
    value = d.value
    if isinstance(value, (tuple, list)):
        value = [str(v) for v in value]
    elif value is not None and not isinstance(value, (str, bool, int, float)):
        value = str(value)
    return {"topic": d.topic, "value": value, "reason": d.reason}


def _json_rows(rows: Any) -> Any:
    """A step's row counts: an int, a dict of counts (values kept when JSON-native), or
    None when the statement reports none."""
    if rows is None or isinstance(rows, (bool, int)):
        return rows
    if isinstance(rows, dict):
        return {
            str(k): v if v is None or isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in rows.items()
        }
    return str(rows)


def _rows(result: Any) -> dict[str, Any]:
    return {
        "inserted": result.rows_inserted,
        "updated": result.rows_updated,
        "deleted": result.rows_deleted,
        "unchanged": result.rows_unchanged,
        "expired": result.rows_expired,
        "source_rows": result.source_rows,
        "watermark_after": result.watermark_after,
    }


# --- no password, ever -------------------------------------------------------------------


def _passwords(report: Any) -> set[str]:
    """The passwords of every connection the report's plans used (to scrub them out of
    messages a driver or a user's code might have let through)."""
    found: set[str] = set()
    for r in report.results:
        plan = r.plan
        if plan is None:
            continue
        for conn in (plan.target_conn_obj, plan.source_conn_obj):
            dsn = getattr(conn, "dsn", None)
            if not dsn:
                continue
            try:
                from psycopg.conninfo import conninfo_to_dict

                password = conninfo_to_dict(dsn).get("password")
            except Exception:
                continue
            # Shorter ones would scrub ordinary words out of the SQL; the engine's own
            # messages are redacted at the source (redact_dsn) whatever the length.
            if password and len(str(password)) >= 4:
                found.add(str(password))
    return found


def _scrub(value: Any, passwords: set[str]) -> Any:
    if not passwords:
        return value
    if isinstance(value, str):
        for pw in passwords:
            value = value.replace(pw, "***")
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, passwords) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, passwords) for v in value]
    return value
