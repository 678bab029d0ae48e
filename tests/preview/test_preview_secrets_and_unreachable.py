"""No password in any preview or dry-run output — text or JSON, compact or verbose,
success or failure — even for a connection given as an inline URL; and a preview with
no reachable database still shows everything that needs none, marking the rest unknown."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from preview_helpers import flow, flow_process
from preview_module import MODULE, setup_sources
from psycopg.conninfo import conninfo_to_dict

from ematix_flow._exitcodes import ExitCode

pytestmark = pytest.mark.db

PASSWORD = "Zq7-Very-Distinct1ve-Passw0rd"

INLINE = """
from typing import Annotated

from ematix_flow import _core, ematix, pipeline, pk
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, Text

WAREHOUSE = "{warehouse}"


class Mirror(ManagedTable):
    __schema__ = "mart"
    __tablename__ = "mirror"
    customer_id = Column(BigInt(), nullable=False, primary_key=True)
    email = Column(Text(), nullable=False)


class Broken(ManagedTable):
    __schema__ = "mart"
    __tablename__ = "broken"
    customer_id = Column(BigInt(), nullable=False, primary_key=True)
    nickname = Column(Text(), nullable=False)


@pipeline.register(name="pv_inline", schedule="0 * * * *")
def pv_inline():
    conn = _core.connect(WAREHOUSE)
    for table in (Mirror, Broken):
        pipeline.sync(
            target=table,
            source=Source.postgres_query(
                conn, "SELECT id AS customer_id, email FROM crm.customers"
            ),
            target_connection=conn,
            mode="merge",
        )
"""


def url_with_password(conninfo: str, password: str) -> str:
    """``postgresql://user:password@/db?host=…`` for the test server (which trusts
    local connections, so any password is accepted)."""
    p = conninfo_to_dict(conninfo)
    host = p.get("host", "")
    port = f":{p['port']}" if p.get("port") and not host.startswith("/") else ""
    if host.startswith("/"):
        return f"postgresql://{p['user']}:{password}@{port}/{p['dbname']}?host={host}"
    return f"postgresql://{p['user']}:{password}@{host}{port}/{p['dbname']}"


def test_no_password_in_any_output(project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    setup_sources(project)
    inline = url_with_password(project.urls["warehouse"], PASSWORD)
    module = project.module(
        f"pv_inline_{uuid.uuid4().hex[:8]}", INLINE.replace("{warehouse}", inline)
    )
    named = project.module(f"pv_pipelines_{uuid.uuid4().hex[:8]}", MODULE)
    # the named connections carry the password too
    monkeypatch.setenv(
        "EMATIX_FLOW_DSN_WAREHOUSE", url_with_password(project.urls["warehouse"], PASSWORD)
    )
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLTP", url_with_password(project.urls["oltp"], PASSWORD))
    outputs = []
    for mod, name, formats in (
        (module, "pv_inline", ([], ["-v"], ["--format", "json"])),
        (named, "pv_fanout", ([], ["--format", "json"])),
    ):
        for command in ("preview", "dry-run"):
            for extra in formats:
                result = flow_process(command, name, "--module", mod, *extra)
                outputs.append(result.stdout + result.stderr)
    joined = "\n".join(outputs)
    assert PASSWORD not in joined
    # the outputs did describe the connections and the failure
    assert "explicit url → host " in joined and "configured in explicit url" in joined
    assert "nickname" in joined and "✗ mart.broken" in joined
    # a connection that fails: the password is not in its error either
    monkeypatch.setenv(
        "EMATIX_FLOW_DSN_WAREHOUSE", f"postgresql://someone:{PASSWORD}@127.0.0.1:1/wh"
    )
    for command in ("preview", "dry-run"):
        for extra in ([], ["--format", "json"]):
            result = flow_process(command, "pv_fanout", "--module", named, *extra)
            assert result.returncode == int(ExitCode.RUN_FAILED)
            assert PASSWORD not in result.stdout + result.stderr
            assert "127.0.0.1" in result.stdout


def test_preview_without_a_reachable_database(
    project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = project.module(f"pv_pipelines_{uuid.uuid4().hex[:8]}", MODULE)
    # nothing listens on port 1: both connections are refused at once
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", "postgresql://app:pw1234@127.0.0.1:1/wh")
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLTP", "postgresql://app:pw1234@127.0.0.1:1/oltp")
    result = flow("preview", "pv_fanout", "--module", module, "-v")
    assert result.exit_code == int(ExitCode.RUN_FAILED)  # cannot tell that it would succeed
    out = result.stdout
    # everything that needs no database is there
    assert "warehouse → host 127.0.0.1:1  db wh  user app" in out
    assert "merge keys          (customer_id)  [from pk()]" in out
    assert "deletes             hard" in out
    assert "SELECT id AS customer_id, email, name, updated_at FROM app.customers" in out
    assert 'CREATE TABLE IF NOT EXISTS "mart"."customer_history"' in out
    assert "is_current" in out and "+ framework" in out
    # the rest is marked unknown
    assert sum(line.startswith("? mart.") for line in out.splitlines()) == 4
    assert "unknown (not inspected)" in out
    assert "unknown: target table (target not inspected)" in out
    assert "watermark           updated_at: unknown" in out
    doc = json.loads(flow("preview", "pv_fanout", "--module", module, "--format", "json").stdout)
    assert not doc["ok"] and {t["outcome"] for t in doc["targets"]} == {"unknown"}
    for t in doc["targets"]:
        assert t["plan"]["table_exists"] is None and t["plan"]["unknown"]
        assert t["plan"]["steps"]
        assert (t["plan"]["keys"] is None) == (t["mode"] == "append")
    compact = flow("preview", "pv_fanout", "--module", module).stdout
    assert "  ? mart.customer_log" in compact and "unknown: target:" in compact
