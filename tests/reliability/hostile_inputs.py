"""The hostile-input corpus: inputs a user (or an attacker) may hand ematix-flow, each
with the outcome we promise. Data only; ``test_hostile_inputs.py`` and
``test_operator_resilience.py`` run it.

Kinds:

``definition``  a module body (after :data:`HEADER`) that must fail at import with the
                named error from our tree; through ``flow list`` it must exit
                CONFIG_ERROR with ``error: …`` and no traceback.
``run``         a module body that imports fine; ``flow run <pipeline>`` must fail with
                ``exit_code``, the message containing ``match``, and touch no data
                (every relation and row count of both databases as before; only
                ``failed`` rows may be added to the run history).
``identifier``  names with quotes, spaces, unicode, reserved words or SQL in them that
                are *valid* identifiers: ``flow run`` must succeed, write exactly the
                source rows into exactly the declared table, and touch nothing else.
``config``      the text of ``./.ematix-flow.toml``; ``flow connections check wh`` must
                exit CONFIG_ERROR with a message containing ``match``.
``dsn``         the value of ``EMATIX_FLOW_DSN_ODD``; ``flow connections check odd`` must
                exit ``exit_code`` (3: not a DSN; 1: a DSN that cannot connect) and never
                print the password (``secret``).
``operator``    overrides of a valid ``EmatixPipeline`` spec; the operator must mark the
                resource ``Ready=False`` with ``match`` as the reason, post a Warning
                Event, create no CronJob, and keep reconciling the others.

Every ``run`` and ``identifier`` module reads the source database as connection ``oltp``
(tables ``app.users`` and the canary ``app.victims``) and writes connection
``warehouse`` (which has its own ``app.victims``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CORPUS", "HEADER", "Hostile"]

CONFIG_ERROR, RUN_FAILED = 3, 1

HEADER = """\
from datetime import timedelta
from typing import Annotated
from ematix_flow import ematix, natural_key, nullable, pk
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Boolean, Numeric, String, Text, TimestampTZ


@ematix.table(schema="wh", name="base")
class Base:
    id: Annotated[BigInt, pk()]
    name: Text
    ts: TimestampTZ | None


"""


@dataclass(frozen=True)
class Hostile:
    id: str
    kind: str
    text: str = ""
    expect: str = "EmatixFlowError"  # class name in ematix_flow._errors, or "ok"
    match: str = ""
    exit_code: int = CONFIG_ERROR
    pipeline: str = "p"
    secret: str = ""
    spec: dict[str, Any] = field(default_factory=dict)


def _definition(id: str, body: str, match: str, expect: str = "DefinitionError") -> Hostile:
    return Hostile(id, "definition", body, expect, match)


def _pipe(options: str, body: str = 'return "SELECT id, name, ts FROM app.users"') -> str:
    return f"@ematix.pipeline({options})\ndef p(conn):\n    {body}\n"


def _table(annotations: str, **options: str) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in options.items())
    return f"T = ematix.table({opts})(type('T', (), {{'__annotations__': {annotations}}}))\n"


DEFINITIONS = [
    _definition(
        "bare-pipeline-decorator",
        "@ematix.pipeline\ndef p(conn):\n    return 'x'\n",
        "must be called",
    ),
    _definition(
        "bare-table-decorator", "@ematix.table\nclass T:\n    id: BigInt\n", "ematix.table"
    ),
    _definition(
        "pk-not-called",
        _table("{'id': Annotated[BigInt, pk]}", schema="'wh'"),
        "pk()",
        "MarkerUsageError",
    ),
    _definition(
        "natural-key-not-called",
        _table("{'id': Annotated[BigInt, natural_key]}", schema="'wh'"),
        "natural_key()",
        "MarkerUsageError",
    ),
    _definition("int-annotation", _table("{'id': int}", schema="'wh'"), "not an ematix_flow"),
    _definition(
        "unresolvable-annotation", _table("{'id': 'NoSuchType'}", schema="'wh'"), "cannot be read"
    ),
    _definition("no-columns", "@ematix.table(schema='wh')\nclass T:\n    pass\n", "no columns"),
    _definition("negative-string-length", _table("{'id': String[-1]}", schema="'wh'"), "length"),
    _definition("scale-above-precision", _table("{'id': Numeric[2, 5]}", schema="'wh'"), "scale"),
    _definition(
        "table-name-too-long", _table("{'id': BigInt}", schema="'wh'", name="'x' * 80"), "63-byte"
    ),
    _definition(
        "table-name-empty", _table("{'id': BigInt}", schema="'wh'", name="''"), "non-empty"
    ),
    _definition("table-name-nul", _table("{'id': BigInt}", schema="'wh'", name="'a\\x00b'"), "NUL"),
    _definition("column-name-nul", _table("{'a\\x00b': BigInt}", schema="'wh'"), "NUL"),
    _definition(
        "unknown-table-option", _table("{'id': BigInt}", schema="'wh'", nme="'x'"), "unknown option"
    ),
    _definition(
        "cron-out-of-range",
        _pipe("target=Base, mode='merge', schedule='61 * * * *'"),
        "not a valid cron",
    ),
    _definition(
        "cron-words", _pipe("target=Base, mode='merge', schedule='every day'"), "not a valid cron"
    ),
    _definition("cron-int", _pipe("target=Base, mode='merge', schedule=5"), "not a valid cron"),
    _definition(
        "cron-six-fields",
        _pipe("target=Base, mode='merge', schedule='0 0 * * * * *'"),
        "not a valid cron",
    ),
    _definition(
        "cron-injection",
        _pipe("target=Base, mode='merge', schedule='* * * * *; rm -rf /'"),
        "not a valid cron",
    ),
    _definition("mode-int", _pipe("target=Base, mode=3"), "is not a mode"),
    _definition("mode-unknown", _pipe("target=Base, mode='upsert'"), "is not a mode"),
    _definition("keys-int", _pipe("target=Base, mode='merge', keys=42"), "keys="),
    _definition(
        "keys-unknown-column", _pipe("target=Base, mode='merge', keys=('nope',)"), "not a column"
    ),
    _definition(
        "keys-injection",
        _pipe("target=Base, mode='merge', keys=('id); DROP TABLE app.victims; --',)"),
        "not a column",
    ),
    _definition("ttl-string", _pipe("target=Base, mode='scd2', ttl='forever'"), "ttl="),
    _definition("ttl-negative", _pipe("target=Base, mode='scd2', ttl=timedelta(days=-1)"), "ttl="),
    _definition(
        "handle-deletes-unknown",
        _pipe("target=Base, mode='merge', handle_deletes='yes'"),
        "handle_deletes",
    ),
    _definition(
        "handle-deletes-append",
        _pipe("target=Base, mode='append', handle_deletes='hard'"),
        "handle_deletes",
    ),
    _definition(
        "incremental-list",
        _pipe("target=Base, mode='merge', incremental_column=['id']"),
        "incremental_column",
    ),
    _definition(
        "force-path-unknown", _pipe("target=Base, mode='merge', force_path='fast'"), "force_path"
    ),
    _definition("target-string", _pipe("target='Base', mode='merge'"), "is not a target"),
    _definition("targets-none", _pipe("targets=[None], mode='merge'"), "is not a target"),
    _definition(
        "target-connection-int",
        _pipe("target=Base, mode='merge', target_connection=5"),
        "target_connection",
    ),
    _definition(
        "compare-unknown-column",
        _pipe("target=Base, mode='scd1', compare_columns=('zz',)"),
        "not a column",
    ),
    _definition(
        "event-ts-unknown-column",
        _pipe("target=Base, mode='scd2', event_timestamp_column='zz'"),
        "not a column",
    ),
    _definition(
        "continue-on-failure-string",
        _pipe("target=Base, mode='merge', continue_on_failure='yes'"),
        "continue_on_failure",
    ),
    _definition("pipeline-name-empty", _pipe("target=Base, mode='merge', name=''"), "name="),
    _definition(
        "source-table-unqualified",
        "@ematix.pipeline(target=Base, mode='merge', source_table='users')\ndef p():\n    pass\n",
        "schema.table",
    ),
    _definition(
        "source-table-three-parts-injection",
        "@ematix.pipeline(target=Base, mode='merge', "
        "source_table='app.users; DROP TABLE app.victims; --x.y')\ndef p():\n    pass\n",
        "schema.table",
    ),
    _definition(
        "source-table-quote-injection",
        "@ematix.pipeline(target=Base, mode='merge', "
        "source_table='app.users\"; DROP TABLE app.victims; --')\ndef p():\n    pass\n",
        "schema.table",
    ),
    _definition(
        "column-map-unknown-target-column",
        "@ematix.pipeline(target=Base, mode='merge', source_table='app.users', "
        "column_map={'nope': 'id'})\ndef p():\n    pass\n",
        "column_map",
    ),
    _definition(
        "two-params-no-source-connection",
        _pipe("target=Base, mode='merge'").replace("def p(conn)", "def p(a, b)"),
        "source_connection",
    ),
    _definition("same-target-twice", _pipe("targets=[Base, Base], mode='merge'"), "twice"),
]

_RUN_BASE = 'mode="merge", source_connection="oltp", target_connection="warehouse"'

RUNS = [
    Hostile(
        "unknown-target-connection",
        "run",
        _pipe('target=Base, mode="merge", target_connection="nowhere"'),
        "UnknownConnectionError",
        "'nowhere'",
        CONFIG_ERROR,
    ),
    Hostile(
        "unknown-source-connection",
        "run",
        _pipe(
            'target=Base, mode="merge", source_connection="nowhere", target_connection="warehouse"'
        ).replace("def p(conn)", "def p(src, tgt)"),
        "UnknownConnectionError",
        "'nowhere'",
        CONFIG_ERROR,
    ),
    Hostile(
        "invalid-connection-name",
        "run",
        _pipe('target=Base, mode="merge", target_connection="bad name!"'),
        "ConfigurationError",
        "invalid connection name",
        CONFIG_ERROR,
    ),
    Hostile(
        "source-schema-name-injection",
        "run",
        "@ematix.pipeline(target=Base, source_table='app; DROP SCHEMA app CASCADE; --.users', "
        f"{_RUN_BASE})\ndef p():\n    pass\n",
        "SourceError",
        "DROP SCHEMA",
        RUN_FAILED,
    ),
    Hostile(
        "column-map-injection",
        "run",
        "@ematix.pipeline(target=Base, source_table='app.users', column_map="
        "{'name': 'name) FROM app.users; DROP TABLE app.victims; --'}, "
        f"{_RUN_BASE})\ndef p():\n    pass\n",
        "SourceError",
        "DROP TABLE app.victims",
        RUN_FAILED,
    ),
    Hostile(
        "column-map-quote-injection",
        "run",
        "@ematix.pipeline(target=Base, source_table='app.users', column_map="
        "{'name': 'name\"\"; DELETE FROM app.victims; --'}, "
        f"{_RUN_BASE})\ndef p():\n    pass\n",
        "SourceError",
        "DELETE FROM app.victims",
        RUN_FAILED,
    ),
    Hostile(
        "stacked-statements-in-source-sql",
        "run",
        _pipe(
            f"target=Base, {_RUN_BASE}",
            'return "SELECT id, name, ts FROM app.users; DROP TABLE app.victims"',
        ).replace("def p(conn)", "def p(src, tgt)"),
        "SourceError",
        "p",
        RUN_FAILED,
    ),
    Hostile(
        "source-missing-column",
        "run",
        _pipe(f"target=Base, {_RUN_BASE}", 'return "SELECT id, ts FROM app.users"').replace(
            "def p(conn)", "def p(src, tgt)"
        ),
        "SourceError",
        "name",
        RUN_FAILED,
    ),
    Hostile(
        "source-duplicate-keys",
        "run",
        _pipe(
            f"target=Base, {_RUN_BASE}", 'return "SELECT 1::bigint AS id, name, ts FROM app.users"'
        ).replace("def p(conn)", "def p(src, tgt)"),
        "SourceError",
        "duplicate",
        RUN_FAILED,
    ),
    Hostile(
        "source-uncastable-type",
        "run",
        _pipe(
            f"target=Base, {_RUN_BASE}",
            "return \"SELECT 'x' || id AS id, name, ts FROM app.users\"",
        ).replace("def p(conn)", "def p(src, tgt)"),
        "SourceError",
        "id",
        RUN_FAILED,
    ),
    Hostile(
        "source-sql-syntax-error",
        "run",
        _pipe(f"target=Base, {_RUN_BASE}", 'return "SELEC id, name, ts FROM app.users"').replace(
            "def p(conn)", "def p(src, tgt)"
        ),
        "SourceError",
        "syntax",
        RUN_FAILED,
    ),
    Hostile(
        "source-table-missing",
        "run",
        f"@ematix.pipeline(target=Base, source_table='app.nope', {_RUN_BASE})\n"
        "def p():\n    pass\n",
        "SourceError",
        "app.nope",
        RUN_FAILED,
    ),
    Hostile(
        "pipeline-not-registered",
        "run",
        "",
        "PipelineNotFoundError",
        "nope",
        CONFIG_ERROR,
        pipeline="nope",
    ),
]

#: Valid but awkward identifiers: each run must quote them and write exactly one table.
IDENTIFIERS = [
    ("reserved-words", "'select'", "'order'", ["user", "group"]),
    ("spaces", "'my schema'", "'my table'", ["first name", "last name"]),
    ("quotes", "'wh\"q'", "'t\"; DROP TABLE app.victims; --'", ['a"b', "it's"]),
    ("unicode", "'größe'", "'tabelle_ü'", ["straße", "名前"]),
    (
        "sql-in-names",
        "'wh'",
        "'x) ; DELETE FROM app.victims; --'",
        ["id) ; DROP TABLE app.victims; --", "v"],
    ),
    ("mixed-case", "'WH'", "'CamelCase'", ["ColA", "colA"]),
    ("percent-and-braces", "'wh'", "'p%s{x}'", ["%(name)s", "{0}"]),
    ("dollar-quotes", "'wh'", "'$$x$$'", ["$1", "a$$b"]),
]


def _identifier_case(id: str, schema: str, name: str, columns: list[str]) -> Hostile:
    annotations = (
        "{'k': Annotated[BigInt, pk()], " + ", ".join(f"{c!r}: Text | None" for c in columns) + "}"
    )
    quoted = ['"' + c.replace('"', '""') + '"' for c in columns]
    query = "SELECT id AS k, " + ", ".join(f"'v' || id AS {q}" for q in quoted) + " FROM app.users"
    body = (
        _table(annotations, schema=schema, name=name)
        + "@ematix.pipeline(target=T, mode='merge', source_connection='oltp', "
        "target_connection='warehouse')\n"
        f"def p(src, tgt):\n    return {query!r}\n"
    )
    return Hostile(f"identifier-{id}", "identifier", body, "ok", f"{schema}|{name}", 0)


CONFIGS = [
    Hostile("toml-unterminated-array", "config", "connections = [", match="not valid TOML"),
    Hostile("toml-missing-value", "config", "[connections.wh]\ndsn = ", match="not valid TOML"),
    Hostile("toml-connections-not-table", "config", "connections = 5", match="must be a table"),
    Hostile("toml-no-dsn-key", "config", '[connections.wh]\nurl = "x"', match="dsn ="),
    Hostile("toml-dsn-not-string", "config", "[connections.wh]\ndsn = 5", match="must be a string"),
    Hostile(
        "toml-bad-connection-name",
        "config",
        '[connections."bad name"]\ndsn = "postgresql://x"',
        match="invalid connection name",
    ),
    Hostile(
        "toml-unset-variable",
        "config",
        '[connections.wh]\ndsn = "${EMATIX_TEST_UNSET_VAR}"',
        match="is not set",
    ),
    Hostile(
        "toml-bad-variable-name",
        "config",
        '[connections.wh]\ndsn = "${bad-var}"',
        match="not a valid environment variable",
    ),
    Hostile(
        "toml-same-connection-twice",
        "config",
        '[connections.wh]\ndsn="postgresql://u:Tw1cE-pw@h/a"\n'
        '[connections.WH]\ndsn="postgresql://u:Tw1cE-pw@h/b"',
        match="same connection",
        secret="Tw1cE-pw",
    ),
    Hostile(
        "toml-broken-after-secret",
        "config",
        '[connections.wh]\ndsn = "postgresql://u:T0ml-S3cret@h/db"\n[[',
        match="not valid TOML",
        secret="T0ml-S3cret",
    ),
    Hostile("toml-binary-garbage", "config", "\x00\x01\x02[connections", match="not valid TOML"),
    Hostile(
        "toml-wrong-scheme",
        "config",
        '[connections.wh]\ndsn = "mysql://u:My-pw9@h/db"',
        match="PostgreSQL only",
        secret="My-pw9",
    ),
]

#: (id, DSN, the password in it, expected exit code)
DSNS = [
    ("not-a-dsn", "not a dsn at all", "", CONFIG_ERROR),
    ("wrong-scheme", "mysql://u:Wr0ng-Sch3me@/db", "Wr0ng-Sch3me", CONFIG_ERROR),
    ("bad-percent-encoding", "postgresql://u:%ZZ-Pct-pw@h/db", "%ZZ-Pct-pw", CONFIG_ERROR),
    ("broken-ipv6", "postgresql://u:V6-pw-x@[::1/db", "V6-pw-x", CONFIG_ERROR),
    (
        "unencoded-at-and-colon-in-password",
        "postgresql://user:p@ss:w0rd-Xq@/db?host=/nonexistent",
        "p@ss:w0rd-Xq",
        CONFIG_ERROR,
    ),
    (
        "unicode-password",
        "postgresql://u:ünïcødé-pw@/db?host=/nonexistent",
        "ünïcødé-pw",
        RUN_FAILED,
    ),
    (
        "shell-chars-password",
        "postgresql://u:pw\"'`$(id)-Sh@/db?host=/nonexistent",
        "pw\"'`$(id)-Sh",
        RUN_FAILED,
    ),
    (
        "percent-encoded-password",
        "postgresql://u:%40t%3Aq-Enc@/db?host=/nonexistent",
        "@t:q-Enc",
        RUN_FAILED,
    ),
    ("port-out-of-range", "postgresql://u:P0rt-pw@localhost:99999/db", "P0rt-pw", RUN_FAILED),
    (
        "bad-sslmode",
        "postgresql://u:Ssl-pw1@/db?host=/nonexistent&sslmode=bogus",
        "Ssl-pw1",
        RUN_FAILED,
    ),
    (
        "keyword-form-quoted-password",
        "host=/nonexistent dbname=x user=u password='kw pass \\' Q1'",
        "kw pass ' Q1",
        RUN_FAILED,
    ),
    (
        "password-in-query",
        "postgresql:///db?host=/nonexistent&password=Qry-pw7",
        "Qry-pw7",
        RUN_FAILED,
    ),
]

OPERATOR = [
    ("schedule-int", {"schedule": 5}, "InvalidSchedule"),
    ("schedule-empty", {"schedule": ""}, "InvalidSchedule"),
    ("schedule-injection", {"schedule": "* * * * *; rm -rf /"}, "InvalidSchedule"),
    ("time-zone-int", {"timeZone": 5}, "UnknownTimeZone"),
    ("connections-string", {"connections": "warehouse"}, "InvalidSpec"),
    (
        "connection-name-invalid",
        {"connections": [{"name": "bad name!", "secretName": "s"}]},
        "InvalidSpec",
    ),
    ("connection-without-name", {"connections": [{"secretName": "s"}]}, "InvalidSpec"),
    ("pipeline-missing", {"pipeline": None}, "InvalidSpec"),
    ("module-missing", {"module": None}, "InvalidSpec"),
    ("image-empty", {"image": ""}, "MissingImage"),
    ("suspend-not-boolean", {"suspend": "maybe"}, "InvalidSpec"),
    ("resources-not-a-map", {"resources": "lots"}, "InvalidSpec"),
    ("concurrency-policy-unknown", {"concurrencyPolicy": "Sometimes"}, "InvalidSpec"),
    ("backoff-negative", {"backoffLimit": -1}, "InvalidSpec"),
]


CORPUS: list[Hostile] = [
    *DEFINITIONS,
    *RUNS,
    *(_identifier_case(*row) for row in IDENTIFIERS),
    *CONFIGS,
    *(
        Hostile(f"dsn-{id}", "dsn", dsn, "", "", code, secret=secret)
        for id, dsn, secret, code in DSNS
    ),
    *(
        Hostile(f"operator-{id}", "operator", "", "", reason, spec=spec)
        for id, spec, reason in OPERATOR
    ),
]


def of_kind(kind: str) -> list[Hostile]:
    return [h for h in CORPUS if h.kind == kind]
