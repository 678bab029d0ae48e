"""Text rendering of a preview / dry-run document (:mod:`.document`) with rich.

Two shapes, chosen as spec §3.5 says:

- **compact** (a multi-target pipeline without ``--verbose``): one line per target with
  its mark, mode, merge keys and path — exactly the summary of §3.5, plus, in a dry run,
  the rows each target would change, and under a failing target its error;
- **verbose** (a single target, or ``--verbose``): per target the resolved connections
  (name → host/db/user, where configured; never the password), the source, the path
  decision and its reason, the augmented table (framework columns dim and tagged
  ``+ framework``), keys / compare / update columns with their reasons, deletes,
  watermark, drift to apply or refuse, problems, unknown parts, and the full SQL plan
  (in a dry run with the rows each statement affected).

Marks: ``✓`` would succeed, ``✗`` would fail, ``?`` unknown (a database could not be
reached), ``-`` skipped (another run holds the target's lock).

Styles only add colour; every distinction also shows in plain text, so output piped to a
file or read with ``NO_COLOR`` loses nothing. Called by ``flow preview`` / ``flow dry-run``.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

from rich.text import Text

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["compact", "render", "verbose"]

MARKS = {"ok": ("✓", "green"), "failed": ("✗", "bold red"), "unknown": ("?", "yellow")}
MARKS["skipped"] = ("-", "yellow")
_LABEL = 20  # width of the label column of the verbose form


def render(doc: dict[str, Any], console: Console, *, verbose_: bool | None = None) -> None:
    """Print ``doc``: verbose for one target or when asked, compact otherwise."""
    full = verbose_ if verbose_ is not None else len(doc["targets"]) <= 1
    for line in verbose(doc) if full else compact(doc):
        console.print(line)


def _mark(outcome: str) -> Text:
    sign, style = MARKS.get(outcome, ("✗", "bold red"))
    return Text(sign, style=style)


def _header(doc: dict[str, Any]) -> Text:
    schedule = doc["schedule"] or "none"
    text = Text(doc["pipeline"], style="bold")
    text += Text(f"   schedule: {schedule}   targets: {len(doc['targets'])}")
    return text


def _keys_text(target: dict[str, Any]) -> str:
    plan = target["plan"]
    keys = plan["keys"] if plan else None
    if not keys or not keys["columns"]:
        return "—"
    return "(" + ", ".join(keys["columns"]) + ")"


def _n(value: Any) -> str:
    """A count as people read it (``1,000,000``); anything else as it is."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _rows_text(rows: dict[str, Any]) -> str:
    text = (
        f"inserted={_n(rows['inserted'])} updated={_n(rows['updated'])} "
        f"deleted={_n(rows['deleted'])} unchanged={_n(rows['unchanged'])}"
    )
    if rows.get("expired"):
        text += f" expired={_n(rows['expired'])}"
    return text


def _footer(doc: dict[str, Any]) -> list[Text]:
    lines = []
    if doc["error"]:
        lines.append(Text("  ") + _mark("failed") + Text(f" pipeline body: {doc['error']}"))
    if doc["action"] == "dry_run":
        lines.append(
            Text(
                "  dry run: every statement executed in one transaction per target, then "
                "rolled back",
                style="dim",
            )
        )
    return lines


# --- compact -----------------------------------------------------------------------------


def compact(doc: dict[str, Any]) -> list[Text]:
    """The one-line-per-target summary of spec §3.5 (name, mode, keys and path columns
    separated by at least 3, 2 and 3 spaces, as the spec's example is)."""
    targets = doc["targets"]
    names = [t["target"] for t in targets]
    modes = [f"mode={t['mode']}" for t in targets]
    keys = [f"keys={_keys_text(t)}" for t in targets]
    paths = [f"path={t['path'] or '—'}" for t in targets]
    w_name = max(map(len, names), default=0) + 3
    w_mode = max(map(len, modes), default=0) + 2
    w_keys = max(map(len, keys), default=0) + 3
    w_path = max(map(len, paths), default=0) + 3
    dry = doc["action"] == "dry_run"
    lines = [_header(doc), Text("")]
    for t, name, mode, key, path in zip(targets, names, modes, keys, paths, strict=True):
        line = Text("  ") + _mark(t["outcome"]) + Text(" ")
        line += Text(name.ljust(w_name), style="bold") + Text(mode.ljust(w_mode))
        line += Text(key.ljust(w_keys))
        if dry:
            line += Text(path.ljust(w_path))
            if t["outcome"] == "ok":
                line += Text("OK  ", style="green") + Text(_rows_text(t["rows"]))
            else:
                line += Text(t["outcome"].upper(), style="bold red")
        else:
            line += Text(path)
        lines.append(line)
        lines.extend(_trouble(t, indent="      "))
    lines.append(Text(""))
    lines.extend(_footer(doc))
    lines.append(Text("  --verbose for SQL plans per target", style="dim"))
    return lines


def _trouble(target: dict[str, Any], *, indent: str) -> list[Text]:
    """Why a target would fail, or what is unknown about it."""
    out: list[Text] = []
    if target["error"]:
        for i, part in enumerate(target["error"].splitlines()):
            prefix = "error: " if i == 0 else "       "
            out.append(Text(indent) + Text(prefix + part, style="red"))
    plan = target["plan"]
    if target["outcome"] == "unknown" and plan:
        for item in plan["unknown"]:
            out.append(Text(indent) + Text(f"unknown: {item}", style="yellow"))
    return out


# --- verbose -----------------------------------------------------------------------------


def verbose(doc: dict[str, Any]) -> list[Text]:
    """Every target's full plan: decisions with reasons, the table, the SQL."""
    lines = [_header(doc)]
    for t in doc["targets"]:
        lines.append(Text(""))
        lines.extend(_target(t, dry=doc["action"] == "dry_run"))
    lines.append(Text(""))
    lines.extend(_footer(doc))
    return lines


def _kv(label: str, value: Text | str, indent: str = "  ") -> Text:
    body = value if isinstance(value, Text) else Text(value)
    return Text(indent) + Text(label.ljust(_LABEL), style="bold") + body


def _reason(reason: str | None) -> Text:
    return Text(f"  {reason}", style="italic") if reason else Text("")


def _connection_text(conn: dict[str, Any] | None) -> Text:
    if conn is None:
        return Text("unknown", style="yellow")
    name = conn["name"] or "explicit url"
    host = conn["host"] or "localhost"
    if conn["port"] is not None:
        host += f":{conn['port']}"
    text = Text(f"{name} → ", style="bold")
    text += Text(f"host {host}  db {conn['database'] or '—'}  user {conn['user'] or '—'}")
    text += Text(f"  (configured in {conn['origin']})", style="dim")
    return text


def _target(t: dict[str, Any], *, dry: bool) -> list[Text]:
    plan = t["plan"]
    head = _mark(t["outcome"]) + Text(" ") + Text(t["target"], style="bold")
    head += Text(f"   mode={t['mode']}   path={t['path'] or '—'}")
    if dry:
        head += Text("   ")
        head += (
            Text("OK", style="green")
            if t["outcome"] == "ok"
            else Text(t["outcome"].upper(), style="bold red")
        )
    lines = [head]
    lines.extend(_trouble(t, indent="  "))
    if dry and t["rows"]:
        lines.append(_kv("would change", _rows_text(t["rows"])))
    lines.append(_kv("target connection", _connection_text(t["connections"]["target"])))
    lines.append(_kv("source connection", _connection_text(t["connections"]["source"])))
    if plan is None:
        lines.append(_kv("plan", Text("not built: see the error above", style="yellow")))
        return lines
    src = plan["source"]
    lines.append(_kv("source", src["label"]))
    for part in textwrap.dedent(src["sql"] or "").strip().splitlines():
        lines.append(Text(" " * (2 + _LABEL)) + Text(part.rstrip(), style="cyan"))
    lines.append(_kv("path", Text(t["path"] or "—") + _reason(plan["path_reason"])))
    for label, key in (
        ("merge keys", "keys"),
        ("compare columns", "compare_columns"),
        ("update columns", "update_columns"),
    ):
        chosen = plan[key]
        if chosen is not None:
            value = "(" + ", ".join(chosen["columns"]) + ")" if chosen["columns"] else "—"
            lines.append(_kv(label, Text(value) + _reason(chosen["reason"])))
    for d in plan["decisions"]:
        if d["topic"] in ("source_read", "load", "handle_deletes", "ttl", "valid_from"):
            label = {"handle_deletes": "deletes", "source_read": "source read"}.get(
                d["topic"], d["topic"]
            )
            lines.append(_kv(label, Text(str(d["value"])) + _reason(d["reason"])))
    wm = plan["watermark"]
    if wm is not None:
        value = "none stored" if wm["value"] is None else str(wm["value"])
        lines.append(_kv("watermark", Text(f"{wm['column']}: {value}") + _reason(wm["reason"])))
    if t["rows"] and t["rows"].get("watermark_after") is not None:
        lines.append(_kv("watermark after", str(t["rows"]["watermark_after"])))
    lines.extend(_table(t["target"], plan))
    lines.extend(_drift(plan))
    for p in plan["problems"]:
        if not t["error"]:  # a preview's problems are its error, shown above
            lines.append(_kv("problem", Text(p["message"], style="red")))
    for w in plan["warnings"]:
        lines.append(_kv("warning", Text(w, style="yellow")))
    if plan["unknown"] and t["outcome"] != "unknown":
        for item in plan["unknown"]:
            lines.append(_kv("unknown", Text(item, style="yellow")))
    lines.extend(_steps(plan["steps"], dry=dry))
    return lines


def _table(name: str, plan: dict[str, Any]) -> list[Text]:
    exists = plan["table_exists"]
    state = {True: "exists", False: "will be created"}.get(exists, "unknown (not inspected)")
    lines = [_kv("table", Text(f"{name} — {state}"))]
    cols = plan["columns"]
    w_name = max((len(c["name"]) for c in cols), default=0) + 2
    w_type = max((len(c["type"]) for c in cols), default=0) + 2
    for c in cols:
        row = c["name"].ljust(w_name) + c["type"].ljust(w_type)
        row += ("NULL" if c["nullable"] else "NOT NULL").ljust(10)
        if c["framework"]:
            text = Text(row + "+ framework", style="dim")
        else:
            text = Text((row + ("key" if c["key"] else "")).rstrip())
        lines.append(Text(" " * (2 + _LABEL)) + text)
    return lines


def _drift(plan: dict[str, Any]) -> list[Text]:
    lines = []
    for d in plan["drift"]:
        style = "" if d["action"] == "apply" else "red"
        lines.append(_kv(f"drift ({d['action']})", Text(d["change"], style=style)))
    return lines


def _steps(steps: list[dict[str, Any]], *, dry: bool) -> list[Text]:
    n = len(steps)
    lines = [_kv("SQL plan", f"{n} statement{'s' if n != 1 else ''}")]
    for i, step in enumerate(steps, 1):
        head = Text(f"    {i}. ") + Text(step["label"], style="bold") + Text(f"  [{step['kind']}]")
        if dry:
            if step["status"] == "executed":
                head += Text("  ✓", style="green") + Text(f" rows: {_step_rows(step['rows'])}")
            elif step["status"] == "failed":
                head += Text("  ✗ FAILED (see the error above)", style="bold red")
            else:
                head += Text("  not executed", style="yellow")
        lines.append(head)
        if step["note"]:
            lines.append(Text(f"       -- {step['note']}", style="dim"))
        for part in step["sql"].splitlines():
            lines.append(Text("       ") + Text(part, style="cyan"))
    return lines


def _step_rows(rows: Any) -> str:
    if rows is None:
        return "—"
    if isinstance(rows, dict):
        return " ".join(f"{k}={_n(v)}" for k, v in rows.items())
    return _n(rows)
