"""The hostile-input corpus (``hostile_inputs.py``) through the API and the ``flow`` CLI.

Every input yields a clear error from our tree (or, for valid-but-awkward identifiers,
a correct run), never a bare traceback, and touches no data: the relations and row
counts of both databases are read before and after (the operator's share of the corpus
is in ``test_operator_resilience.py``).
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hostile_inputs import HEADER, Hostile, of_kind
from typer.testing import CliRunner

from ematix_flow import _errors, pipeline
from ematix_flow._cli.main import app
from ematix_flow._errors import EmatixFlowError


@pytest.fixture(autouse=True)
def _forget_pipelines(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sys, "path", [str(Path.cwd()), *sys.path])
    before, modules = set(pipeline.registry()), set(sys.modules)
    yield
    for name in set(pipeline.registry()) - before:
        pipeline._unregister(name)
    for name in set(sys.modules) - modules:
        if name.startswith("hostile_"):
            del sys.modules[name]


def _ids(cases: list[Hostile]) -> list[str]:
    return [c.id for c in cases]


def flow(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert isinstance(result.exception, SystemExit | None), result.exception
    assert "Traceback" not in result.output, result.output
    return result


def _module(case: Hostile) -> str:
    name = f"hostile_{re.sub(r'[^a-z0-9]', '_', case.id)}_{uuid.uuid4().hex[:6]}"
    Path(f"{name}.py").write_text(HEADER + case.text, encoding="utf-8")
    importlib.invalidate_caches()
    return name


def _is_a(exc: BaseException, name: str) -> bool:
    assert hasattr(_errors, name), f"{name} is not in ematix_flow._errors"
    return any(cls.__name__ == name for cls in type(exc).__mro__)


def _fragments(secret: str, size: int = 6) -> set[str]:
    """The secret and every piece of it long enough to identify it."""
    if len(secret) <= size:
        return {secret} if secret else set()
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


# --- definitions -------------------------------------------------------------------------


@pytest.mark.parametrize("case", of_kind("definition"), ids=_ids(of_kind("definition")))
def test_bad_definitions_fail_at_import_with_our_error(case: Hostile) -> None:
    name = _module(case)
    with pytest.raises(EmatixFlowError) as info:
        importlib.import_module(name)
    assert _is_a(info.value, case.expect), repr(info.value)
    assert case.match in str(info.value)
    sys.modules.pop(name, None)

    result = flow("list", "--module", name)
    assert result.exit_code == 3, result.output
    assert result.output.startswith("error: cannot import module"), result.output
    assert case.match in " ".join(result.output.split()) or case.match in result.output


# --- runs that must fail without touching data ---------------------------------------------


def _catalog(url: str) -> list[tuple[Any, ...]]:
    """Every relation outside the state schema, with the row count of each table."""
    with psycopg.connect(url, autocommit=True) as conn:
        rels = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', "
            "'information_schema', 'ematix_flow') AND n.nspname NOT LIKE 'pg\\_%' "
            "ORDER BY 1, 2"
        ).fetchall()
        out = []
        for schema, rel, kind in rels:
            count = None
            if kind == "r":
                count = conn.execute(
                    psycopg.sql.SQL("SELECT count(*) FROM {}").format(
                        psycopg.sql.Identifier(schema, rel)
                    )
                ).fetchone()[0]
            out.append((schema, rel, kind, count))
        return out


class _Shared:
    """Two databases shared by the module's run cases: each case reads the catalog
    before and after itself, and none may change it, so they need no fresh pair."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.names = [f"hostile_{uuid.uuid4().hex[:8]}_{w}" for w in ("src", "wh")]
        with psycopg.connect(server_url, autocommit=True) as conn:
            for name in self.names:
                conn.execute(
                    psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name))
                )
        params = psycopg.conninfo.conninfo_to_dict(server_url)
        self.source_url, self.warehouse_url = (
            psycopg.conninfo.make_conninfo(**{**params, "dbname": n}) for n in self.names
        )

    def connect(self, which: str) -> psycopg.Connection[Any]:
        url = self.source_url if which == "source" else self.warehouse_url
        return psycopg.connect(url, autocommit=True)

    def drop(self) -> None:
        from pg_helpers import drop_database

        for name in self.names:
            drop_database(self.server_url, name)


@pytest.fixture(scope="module")
def shared(pg_server_url: str) -> Iterator[_Shared]:
    dbs = _Shared(pg_server_url)
    for url in (dbs.source_url, dbs.warehouse_url):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA app")
            conn.execute("CREATE TABLE app.victims (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO app.victims SELECT g, 'keep' FROM generate_series(1, 5) g")
    with dbs.connect("source") as conn:
        conn.execute("CREATE TABLE app.users (id bigint PRIMARY KEY, name text, ts timestamptz)")
        conn.execute(
            "INSERT INTO app.users SELECT g, 'user ' || g, now() FROM generate_series(1, 7) g"
        )
    yield dbs
    dbs.drop()


@pytest.fixture
def databases(shared: _Shared, monkeypatch: pytest.MonkeyPatch) -> _Shared:
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", shared.warehouse_url)
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLTP", shared.source_url)
    return shared


def _history(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('ematix_flow.run_history')").fetchone()[0] is None:
            return []
        return [
            r[0] for r in conn.execute("SELECT status FROM ematix_flow.run_history ORDER BY id")
        ]


@pytest.mark.db
@pytest.mark.parametrize("case", of_kind("run"), ids=_ids(of_kind("run")))
def test_bad_runs_fail_cleanly_and_touch_no_data(case: Hostile, databases: Any) -> None:
    before = [_catalog(u) for u in (databases.source_url, databases.warehouse_url)]
    history = _history(databases.warehouse_url)
    name = _module(case)
    result = flow("run", case.pipeline, "--module", name)
    assert result.exit_code == case.exit_code, result.output
    assert case.match in result.output, result.output
    assert [_catalog(u) for u in (databases.source_url, databases.warehouse_url)] == before
    assert set(_history(databases.warehouse_url)[len(history) :]) <= {"failed"}

    # The same input through the API: the error is ours, by class.
    try:
        report = pipeline.run(case.pipeline)
    except EmatixFlowError as exc:
        error: BaseException | None = exc
    else:
        assert not report.ok
        failed = [r.exception for r in report.results if not r.ok]
        error = report.exception or (failed[0] if failed else None)
    assert error is not None and _is_a(error, case.expect), repr(error)
    assert [_catalog(u) for u in (databases.source_url, databases.warehouse_url)] == before


# --- awkward but valid identifiers --------------------------------------------------------


@pytest.mark.db
@pytest.mark.parametrize("case", of_kind("identifier"), ids=_ids(of_kind("identifier")))
def test_awkward_identifiers_are_quoted_and_write_only_their_table(
    case: Hostile, databases: Any
) -> None:
    schema, table = (ast.literal_eval(p) for p in case.match.split("|"))
    before = [_catalog(u) for u in (databases.source_url, databases.warehouse_url)]
    module = _module(case)
    result = flow("run", "p", "--module", module)
    assert result.exit_code == 0, result.output
    source_after, warehouse_after = (
        _catalog(u) for u in (databases.source_url, databases.warehouse_url)
    )
    assert source_after == before[0]
    new = [r for r in warehouse_after if r not in before[1]]
    assert [r for r in before[1] if r not in warehouse_after] == []
    assert [(s, t, n) for s, t, k, n in new if k == "r"] == [(schema, table, 7)]
    with databases.connect("warehouse") as conn:
        rows = conn.execute(
            psycopg.sql.SQL("SELECT * FROM {} ORDER BY 1").format(
                psycopg.sql.Identifier(schema, table)
            )
        ).fetchall()
    assert [r[0] for r in rows] == list(range(1, 8))
    assert all(v == f"v{r[0]}" for r in rows for v in r[1:])
    # A second run finds the table as declared (no drift) and changes nothing.
    result = flow("run", "p", "--module", module)
    assert result.exit_code == 0, result.output
    assert "updated 0" in result.output and "inserted 0" in result.output


# --- configuration files and DSNs -----------------------------------------------------------


@pytest.mark.parametrize("case", of_kind("config"), ids=_ids(of_kind("config")))
def test_broken_config_files_are_configuration_errors(case: Hostile) -> None:
    Path(".ematix-flow.toml").write_text(case.text, encoding="utf-8")
    result = flow("connections", "check", "wh", "--timeout", "1")
    assert result.exit_code == 3, result.output
    assert result.output.startswith("error: ")
    assert case.match in " ".join(result.output.split()), result.output
    for output in (result.output, flow("connections", "list", "--format", "json").output):
        for piece in _fragments(case.secret):
            assert piece not in output, output


@pytest.mark.parametrize("case", of_kind("dsn"), ids=_ids(of_kind("dsn")))
def test_odd_dsns_give_clean_errors_and_never_show_the_password(
    case: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_ODD", case.text)
    check = flow("connections", "check", "odd", "--timeout", "2")
    assert check.exit_code == case.exit_code, check.output
    outputs = [
        check.output,
        flow("connections", "check", "odd", "--timeout", "2", "--format", "json").output,
        flow("connections", "list").output,
        flow("connections", "list", "--format", "json").output,
    ]
    for output in outputs:
        for piece in _fragments(case.secret):
            assert piece not in output, output
