"""The steps of ``flow demo``, each a function the CLI calls and renders.

Nothing here prints. The pipelines run through the public API
(:mod:`ematix_flow.pipeline`) with their connections resolved by the registry from
``EMATIX_FLOW_DSN_OLTP`` / ``EMATIX_FLOW_DSN_WAREHOUSE`` — the same mechanism a user
sets to redirect a pipeline — so the demo exercises the product as shipped.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql

from ematix_flow._demo.data import DemoDatabases

__all__ = [
    "MODULE_NAME",
    "PREVIEWED",
    "HistoryRow",
    "TargetCount",
    "demo_connections",
    "demo_home",
    "history_of_user",
    "load_module",
    "pick_user",
    "target_counts",
    "write_module",
]

#: The module the demo writes next to its data directory and imports.
MODULE_NAME = "ematix_demo_pipelines"
#: The pipeline the demo previews before running everything.
PREVIEWED = "user_purchase_features"
#: The SCD2 feature table whose history the demo shows for one user.
FEATURES_TABLE = ("features", "user_purchase_features_v1")
ENV_OLTP = "EMATIX_FLOW_DSN_OLTP"
ENV_WAREHOUSE = "EMATIX_FLOW_DSN_WAREHOUSE"


def demo_home() -> Path:
    """The per-user demo directory: ``pgdata/`` (the server) and the pipelines module."""
    from ematix_flow._embedded import per_user_dir

    return per_user_dir("demo")


def write_module(home: Path) -> Path:
    """Write the example pipelines module into ``home``; returns its path."""
    text = (
        resources.files("ematix_flow._demo")
        .joinpath("example_pipelines.py")
        .read_text(encoding="utf-8")
    )
    path = home / f"{MODULE_NAME}.py"
    path.write_text(text, encoding="utf-8")
    return path


@contextmanager
def demo_connections(databases: DemoDatabases) -> Iterator[dict[str, str]]:
    """Point the connection names ``oltp`` and ``warehouse`` at the demo databases for
    the duration of the block (environment variables, restored afterwards)."""
    wanted = {ENV_OLTP: databases.oltp_url, ENV_WAREHOUSE: databases.warehouse_url}
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield wanted
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_module(home: Path) -> tuple[ModuleType, list[str]]:
    """Import the demo's pipelines module from ``home`` like ``--module`` would from
    that directory; returns the module and the names of the pipelines it registered."""
    from ematix_flow import pipeline

    before = set(_registered_names(pipeline))
    if str(home) not in sys.path:
        sys.path.insert(0, str(home))
    if MODULE_NAME in sys.modules:
        module = sys.modules[MODULE_NAME]
    else:
        module = importlib.import_module(MODULE_NAME)
    names = [n for n in _registered_names(pipeline) if n not in before] or [
        n for n in _registered_names(pipeline) if _module_of(pipeline, n) == MODULE_NAME
    ]
    return module, names


def _registered_names(pipeline: Any) -> list[str]:
    return list(pipeline.registry())


def _module_of(pipeline: Any, name: str) -> str | None:
    record = pipeline.registry()[name]
    return getattr(record, "module", None)


@dataclass(frozen=True)
class TargetCount:
    """Rows in one target table; for SCD2 targets also the current versions."""

    table: str
    mode: str
    rows: int
    current: int | None


def target_counts(warehouse_url: str, targets: list[tuple[str, str]]) -> list[TargetCount]:
    """Count the rows of each ``(schema.table, mode)`` target in the warehouse."""
    out = []
    with psycopg.connect(warehouse_url) as conn:
        for qualified, mode in targets:
            schema, table = qualified.split(".", 1)
            ident = sql.Identifier(schema, table)
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
            current = None
            if mode == "scd2":
                current = conn.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE is_current").format(ident)
                ).fetchone()
            out.append(
                TargetCount(
                    table=qualified,
                    mode=mode,
                    rows=int(rows[0]) if rows else 0,
                    current=int(current[0]) if current else None,
                )
            )
    return out


def pick_user(warehouse_url: str) -> int:
    """The user whose purchase features have the most versions (ties: lowest id) — the
    most interesting SCD2 history to show."""
    with psycopg.connect(warehouse_url) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT user_id FROM {} GROUP BY user_id "
                "ORDER BY count(*) FILTER (WHERE NOT is_current) DESC, count(*) DESC, user_id "
                "LIMIT 1"
            ).format(sql.Identifier(*FEATURES_TABLE))
        ).fetchone()
    if row is None:
        raise LookupError("the feature table is empty")
    return int(row[0])


@dataclass(frozen=True)
class HistoryRow:
    """One version of one user's daily purchase features."""

    period_start: Any
    total_spend: Any
    order_count: int
    last_event_ts: Any
    valid_from: Any
    valid_to: Any
    is_current: bool


def history_of_user(warehouse_url: str, user_id: int, *, days: int = 3) -> list[HistoryRow]:
    """Every version of the user's features for the ``days`` most recent days that
    have more than one version (else the most recent days), oldest first."""
    query = sql.SQL(
        "WITH days AS ("
        " SELECT period_start FROM {t} WHERE user_id = %(u)s"
        " GROUP BY period_start ORDER BY count(*) > 1 DESC, period_start DESC LIMIT %(n)s)"
        " SELECT period_start, total_spend, order_count, last_event_ts, valid_from, valid_to,"
        " is_current FROM {t} WHERE user_id = %(u)s AND period_start IN (SELECT * FROM days)"
        " ORDER BY period_start, valid_from"
    ).format(t=sql.Identifier(*FEATURES_TABLE))
    with psycopg.connect(warehouse_url) as conn:
        rows = conn.execute(query, {"u": user_id, "n": days}).fetchall()
    return [HistoryRow(*row) for row in rows]
