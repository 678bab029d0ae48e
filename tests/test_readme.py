"""Every ```python block of README.md runs, in order, against real databases.

The blocks share one module namespace (as a reader's ``my_pipelines.py`` would). The
connections they name are pointed at the test databases through the same environment
variables the README tells users to set (``EMATIX_FLOW_DSN_WAREHOUSE`` /
``EMATIX_FLOW_DSN_OLTP``), and the source tables the examples read are created first.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from ematix_flow import pipeline

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)

WAREHOUSE_SOURCE = """
CREATE SCHEMA source;
CREATE TABLE source.users (
    id bigint PRIMARY KEY, email text NOT NULL, name text, last_seen timestamptz NOT NULL
);
INSERT INTO source.users VALUES
    (1, 'ada@example.com', 'Ada', '2026-01-01 10:00+00'),
    (2, 'bob@example.com', NULL, '2026-01-02 11:00+00'),
    (3, 'cy@example.com', 'Cy', '2026-01-03 12:00+00');
"""

OLTP_SOURCE = """
CREATE TABLE public.users (id bigint PRIMARY KEY, email text NOT NULL,
                           created_at timestamptz NOT NULL);
INSERT INTO public.users VALUES
    (10, 'ann@example.com', '2025-12-01 09:00+00'),
    (11, 'ben@example.com', '2025-12-02 09:30+00');
CREATE SCHEMA app;
CREATE TABLE app.orders (user_id bigint, ordered_at timestamptz, amount numeric(12, 2));
INSERT INTO app.orders VALUES
    (10, '2026-01-01 08:00+00', 12.50), (10, '2026-01-01 18:00+00', 7.50),
    (11, '2026-01-02 09:00+00', 99.99);
"""


def python_blocks(text: str) -> list[str]:
    return [m.group(1) for m in _BLOCK.finditer(text)]


def test_readme_has_python_examples() -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 3
    assert any("@ematix.pipeline" in b for b in blocks)


@pytest.mark.db
def test_readme_python_blocks_run(dbs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", dbs.warehouse_url)
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLTP", dbs.source_url)
    with dbs.connect("warehouse") as conn:
        conn.execute(WAREHOUSE_SOURCE)
    with dbs.connect("source") as conn:
        conn.execute(OLTP_SOURCE)

    module = types.ModuleType("readme_examples")
    module.__file__ = str(README)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    registered = set(pipeline.registry())
    try:
        for number, block in enumerate(python_blocks(README.read_text(encoding="utf-8")), 1):
            code = compile(block, f"README.md python block {number}", "exec")
            exec(code, module.__dict__)
    finally:  # the examples' pipelines must not outlive this test
        for name in set(pipeline.registry()) - registered:
            pipeline._unregister(name)

    with dbs.connect("warehouse") as conn:
        current = conn.execute(
            "SELECT customer_id, email FROM warehouse.customer_dim WHERE is_current "
            "ORDER BY customer_id"
        ).fetchall()
        spend = conn.execute(
            "SELECT user_id, day::text, spend::text FROM features.daily_spend "
            "WHERE is_current ORDER BY 1, 2"
        ).fetchall()
    assert current == [(1, "ada@example.com"), (2, "bob@example.com"), (3, "cy@example.com")]
    assert spend == [(10, "2026-01-01", "20.00"), (11, "2026-01-02", "99.99")]
