"""The preview of a decorator pipeline equals the preview of its imperative twin (spec
§3.5 / §6 Phase 25): the same document — connections, decisions and reasons, columns,
SQL — and the same text, before the first run and after it. The one reason that differs
names the form each twin declared its key in: ``[from pk()]``, ``[from primary_key=True]``."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from spec_examples import CUSTOMER_SQL, SECTION_1_TABLE, SECTION_2_TABLE, load

from ematix_flow import ematix, pipeline
from ematix_flow._preview import document, to_json
from ematix_flow._preview.text import verbose
from ematix_flow.config import connect
from ematix_flow.source import Source

pytestmark = pytest.mark.db


def test_decorated_and_imperative_previews_are_identical(project: Any) -> None:
    project.sql(
        "oltp",
        "CREATE SCHEMA source",
        "CREATE TABLE source.users (id bigint PRIMARY KEY, email text NOT NULL, name text, "
        "last_seen timestamptz NOT NULL)",
        "INSERT INTO source.users VALUES (1, 'ada@example.com', 'Ada', '2026-01-01 10:00+00')",
    )
    tag = uuid.uuid4().hex[:6]
    decorated_name, imperative_name = f"twin_decorated_{tag}", f"twin_imperative_{tag}"

    CustomerDim = load(SECTION_2_TABLE).CustomerDim  # spec §2's table
    CustomerDimImperative = load(SECTION_1_TABLE).CustomerDim  # spec §1's

    @ematix.pipeline(
        target=CustomerDim,
        schedule="0 * * * *",
        mode="scd2",
        event_timestamp_column="last_seen",
        source_connection="oltp",
        target_connection="warehouse",
        name=decorated_name,
    )
    def customer_sync(src_conn: Any, tgt_conn: Any) -> str:
        return CUSTOMER_SQL

    @pipeline.register(name=imperative_name, schedule="0 * * * *")
    def customer_sync_imperative() -> dict[str, Any]:
        return pipeline.sync(
            target=CustomerDimImperative,
            source=Source.postgres_query(connect("oltp"), CUSTOMER_SQL),
            target_connection=connect("warehouse"),
            mode="scd2",
            event_timestamp_column="last_seen",
        )

    def both() -> tuple[str, str, list[str], list[str]]:
        decorated = document(customer_sync.preview(), schedule="0 * * * *")
        imperative = document(pipeline.preview(imperative_name), schedule="0 * * * *")
        imperative["pipeline"] = decorated_name  # the one thing that must differ
        plan = imperative["targets"][0]["plan"]
        reasons = [plan["keys"]] + [d for d in plan["decisions"] if d["topic"] == "keys"]
        for reason in reasons:  # each names the declaration it was written with
            assert reason["reason"] == "[from primary_key=True]"
            reason["reason"] = "[from pk()]"
        return (
            to_json(decorated),
            to_json(imperative),
            [line.plain for line in verbose(decorated)],
            [line.plain for line in verbose(imperative)],
        )

    dj, ij, dt, it = both()
    assert dj == ij
    assert dt == it
    doc = json.loads(dj)
    assert doc["ok"] and doc["targets"][0]["plan"]["table_exists"] is False
    assert doc["targets"][0]["plan"]["keys"]["reason"] == "[from pk()]"

    assert customer_sync().ok  # the table now exists: the plans change, and still agree
    dj, ij, dt, it = both()
    assert dj == ij and dt == it
    assert json.loads(dj)["targets"][0]["plan"]["table_exists"] is True
