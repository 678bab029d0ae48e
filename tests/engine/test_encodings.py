"""Encodings: between databases of different server encodings on one server, text
arrives as the same characters, or the run refuses before writing anything.

Proved here, for every mode (append, merge, scd1, scd2), with the engine's process
environment at its defaults and with a foreign ``PGCLIENTENCODING=LATIN1`` (which
must change nothing):

- UTF8 source → LATIN1 warehouse, text within Latin-1 (``Zoë``, ``ü``, ``£``, ``ÿ``)
  in ``text``, ``varchar`` and ``text[]`` columns: read back through a UTF8 session,
  the target holds exactly the source's characters (no mojibake), and a re-run over
  the unchanged source writes nothing;
- LATIN1 source → UTF8 warehouse: the same characters arrive;
- UTF8 → UTF8 with characters outside Latin-1 (``日本``, ``€``): they arrive intact;
- UTF8 source → LATIN1 warehouse with a character Latin-1 cannot represent in one
  row: ``pipeline.sync`` raises an ematix-flow error naming the column and the key of
  that row; the target holds no rows and no watermark was stored (once the row is
  fixed, the next incremental run reads the whole source). After an earlier good run,
  such a refusal leaves the target exactly as it was.

The databases are created here with explicit encodings (``TEMPLATE template0``,
``C`` locale) and dropped at the end. The test's own sessions always use
``client_encoding=UTF8``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ematix_flow import _core, pipeline
from ematix_flow._errors import EmatixFlowError
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, String, Text

pytestmark = pytest.mark.db

MODES = ("append", "merge", "scd1", "scd2")
# The engine's environment: the defaults, or a client encoding no database here has.
ENVIRONMENTS = ("default", "PGCLIENTENCODING=LATIN1")

Row = tuple[int, str | None, str | None, list[str] | None]

# Characters every one of which Latin-1 holds (ÿ is 0xFF, £ 0xA3).
LATIN1_ROWS: list[Row] = [
    (1, "Zoë", "ü", ["Zoë", "£"]),
    (2, "£ ÿ", "ÿ£ü", ["ÿ"]),
    (3, None, "", []),
    (4, "plain ascii", None, None),
]
# Characters outside Latin-1 (€ is not in ISO 8859-1).
WIDE_ROWS: list[Row] = [
    (1, "日本", "€ 5", ["日本", "€"]),
    (2, "Zoë", "ü", ["£"]),
]
BAD_KEY = 7342

SOURCE_DDL = (
    "CREATE TABLE IF NOT EXISTS src.people "
    "(id bigint PRIMARY KEY, city_name text, label varchar(20), tags text[])"
)
QUERY = "SELECT id, city_name, label, tags FROM src.people"


class People(ManagedTable):
    __schema__ = "wh"
    __tablename__ = "people"

    id = Column(BigInt(), nullable=False, primary_key=True)
    city_name = Column(Text())
    label = Column(String(20))
    tags = Column(Text())


# --- databases of a given encoding ------------------------------------------------------


def _url(server_url: str, database: str) -> str:
    params = conninfo_to_dict(server_url)
    params["dbname"] = database
    return make_conninfo(**params)


@pytest.fixture
def create_db(pg_server_url: str) -> Iterator[Callable[[str], str]]:
    """``create_db("LATIN1")`` → the URL of a new database of that server encoding."""
    made: list[str] = []

    def create(encoding: str) -> str:
        name = f"t_{uuid.uuid4().hex[:10]}_{encoding.lower()}"
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE DATABASE {} ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
                ).format(sql.Identifier(name), sql.Literal(encoding))
            )
        made.append(name)
        url = _url(pg_server_url, name)
        with _session(url) as conn:
            got = conn.execute("SELECT current_setting('server_encoding')").fetchone()
        assert got == (encoding,)
        return url

    yield create
    from pg_helpers import drop_database  # a non-superuser's FORCE can meet autovacuum

    for name in made:
        drop_database(pg_server_url, name)


@pytest.fixture(params=ENVIRONMENTS)
def environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "PGCLIENTENCODING=LATIN1":
        monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    else:
        monkeypatch.delenv("PGCLIENTENCODING", raising=False)
    return str(request.param)


def _session(url: str) -> psycopg.Connection[Any]:
    """The test's own sessions: UTF8 on the wire whatever the environment says."""
    return psycopg.connect(url, autocommit=True, client_encoding="UTF8")


def _load(source_url: str, rows: list[Row]) -> None:
    with _session(source_url) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS src")
        conn.execute(SOURCE_DDL)
        conn.execute("TRUNCATE src.people")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO src.people VALUES (%s, %s, %s, %s::text[])", rows)


def _sync(source_url: str, warehouse_url: str, mode: str, **options: Any) -> dict[str, Any]:
    return pipeline.sync(
        target=People,
        source=Source.postgres_query(_core.connect(source_url), QUERY),
        target_connection=_core.connect(warehouse_url),
        mode=mode,
        **options,
    )


def _target(warehouse_url: str, mode: str) -> list[Row] | None:
    """The target's (current) rows, read as UTF8; None when the table does not exist."""
    with _session(warehouse_url) as conn:
        if conn.execute("SELECT to_regclass('wh.people')").fetchone() == (None,):
            return None
        where = " WHERE is_current" if mode == "scd2" else ""
        return conn.execute(
            f"SELECT id, city_name, label, tags FROM wh.people{where} ORDER BY id"
        ).fetchall()


def _whole_table(warehouse_url: str) -> list[str]:
    """Every row with every column (framework ones too), as text."""
    with _session(warehouse_url) as conn:
        return [
            r[0]
            for r in conn.execute("SELECT t::text FROM wh.people AS t ORDER BY t::text").fetchall()
        ]


def _array_text(tags: list[str] | None) -> str | None:
    return None if tags is None else "{" + ",".join(tags) + "}"


def _expected(rows: list[Row]) -> list[Row]:
    """What the target reads as: ``tags`` is a Text column holding the array's text."""
    return [(i, city, label, _array_text(tags)) for i, city, label, tags in rows]


# --- characters arrive as the same characters --------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("source_encoding", "target_encoding", "rows"),
    [
        pytest.param("UTF8", "LATIN1", LATIN1_ROWS, id="utf8-to-latin1"),
        pytest.param("LATIN1", "UTF8", LATIN1_ROWS, id="latin1-to-utf8"),
        pytest.param("UTF8", "UTF8", WIDE_ROWS, id="utf8-to-utf8-beyond-latin1"),
    ],
)
def test_text_arrives_as_the_same_characters(
    create_db: Callable[[str], str],
    environment: str,
    mode: str,
    source_encoding: str,
    target_encoding: str,
    rows: list[Row],
) -> None:
    source_url = create_db(source_encoding)
    warehouse_url = create_db(target_encoding)
    _load(source_url, rows)
    first = _sync(source_url, warehouse_url, mode)
    assert first["status"] == "succeeded" and first["rows_inserted"] == len(rows), first
    assert _target(warehouse_url, mode) == _expected(rows)
    if mode != "append":
        again = _sync(source_url, warehouse_url, mode)
        assert (again["rows_inserted"], again["rows_updated"]) == (0, 0), again
        assert _target(warehouse_url, mode) == _expected(rows)


# --- a character the target cannot hold: refused before anything is written -------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "wide", [pytest.param("日本", id="cjk"), pytest.param("price €", id="euro")]
)
def test_unrepresentable_character_is_refused_before_writing(
    create_db: Callable[[str], str], environment: str, mode: str, wide: str
) -> None:
    source_url = create_db("UTF8")
    warehouse_url = create_db("LATIN1")
    rows = [*LATIN1_ROWS[:2], (BAD_KEY, wide, "ok", ["ok"]), LATIN1_ROWS[2]]
    _load(source_url, rows)

    with pytest.raises(EmatixFlowError) as refused:
        _sync(source_url, warehouse_url, mode, incremental_column="id")
    message = str(refused.value)
    assert "city_name" in message, message
    assert str(BAD_KEY) in message, message
    assert not _target(warehouse_url, mode), "rows were written by a refused run"

    # No watermark was stored: with the row fixed, the next incremental run reads the
    # whole source (a stored watermark would skip every key below it).
    fixed = [(i, "Zoë" if i == BAD_KEY else c, lb, t) for i, c, lb, t in rows]
    _load(source_url, fixed)
    result = _sync(source_url, warehouse_url, mode, incremental_column="id")
    assert result["status"] == "succeeded" and result["rows_inserted"] == len(rows), result
    assert _target(warehouse_url, mode) == _expected(sorted(fixed))


@pytest.mark.parametrize("mode", MODES)
def test_refusal_after_a_good_run_leaves_the_target_as_it_was(
    create_db: Callable[[str], str], mode: str
) -> None:
    source_url = create_db("UTF8")
    warehouse_url = create_db("LATIN1")
    _load(source_url, LATIN1_ROWS)
    assert _sync(source_url, warehouse_url, mode, incremental_column="id")["status"] == (
        "succeeded"
    )
    before = _whole_table(warehouse_url)

    _load(source_url, [*LATIN1_ROWS, (BAD_KEY, "Zoë 日本", "ü", ["Zoë", "£"])])
    with pytest.raises(EmatixFlowError) as refused:
        _sync(source_url, warehouse_url, mode, incremental_column="id")
    message = str(refused.value)
    assert "city_name" in message and str(BAD_KEY) in message, message
    assert _whole_table(warehouse_url) == before
