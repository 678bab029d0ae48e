"""The spec's example pipelines (python-ergonomics-plan §1 "Today", §2, §4 "Today" and
"After"), written once for every test that uses them.

Each example is the text of a user's module, so a test can take it either way:

* :func:`load` executes it in this process as a fresh module of a unique name (tests
  that import example modules by name need names unique across the test tree) and
  returns the module: its table classes and pipelines, registered as a user's import
  would register them;
* :func:`write` puts it into a folder as ``<module>.py`` for ``flow … --module``.

``SECTION_…_TABLE`` is the table class of an example alone (no pipeline registered);
``SECTION_…`` is the whole module. The imperative "Today" forms connect to
``WAREHOUSE_URL`` / ``OLTP_URL``, module globals holding the spec's URLs that
:func:`load` can point at the test databases. :func:`with_options` adds keyword
arguments to an example's ``@ematix.pipeline(...)`` for a test that departs from the
spec's text (each such test says why).

Importable as ``spec_examples``: ``tests/`` is on ``sys.path`` through the root
``conftest.py`` (pytest's default import mode).
"""

from __future__ import annotations

import sys
import types
import uuid
from pathlib import Path
from typing import Any

__all__ = [
    "CUSTOMER_SQL",
    "PURCHASES_SQL",
    "SECTION_1",
    "SECTION_1_TABLE",
    "SECTION_2",
    "SECTION_2_TABLE",
    "SECTION_4_AFTER",
    "SECTION_4_AFTER_TABLE",
    "SECTION_4_TODAY",
    "SECTION_4_TODAY_TABLE",
    "load",
    "with_options",
    "write",
]

#: The source query of §1 and §2.
CUSTOMER_SQL = "SELECT id AS customer_id, email, name, last_seen FROM source.users"

#: The source query of §4, byte for byte the same in the "Today" and the "After" form
#: (a plan holds the SQL as written, and the tests compare the two forms' plans).
PURCHASES_SQL = """
            SELECT user_id, date_trunc('day', event_ts)::date AS period_start,
                   sum(amount) AS total_spend, count(*) AS order_count,
                   bool_or(is_sub) AS is_subscriber, max(event_ts) AS last_event_ts
            FROM events.purchases GROUP BY 1, 2
        """

# -- §1 "Where we are today" ------------------------------------------------------------

SECTION_1_TABLE = """
from ematix_flow import _core, pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Column, String, Text, TimestampTZ

WAREHOUSE_URL = "postgres://user:pass@host:5432/warehouse"


class CustomerDim(ManagedTable):
    __schema__ = "warehouse"
    __tablename__ = "customer_dim"

    customer_id = Column(BigInt(), nullable=False, primary_key=True)
    email = Column(String(256), nullable=False)
    name = Column(Text())
    last_seen = Column(TimestampTZ(), nullable=False)
"""

SECTION_1 = (
    SECTION_1_TABLE
    + f'''

@pipeline.register(name="customer_sync", schedule="0 * * * *")
def customer_sync():
    conn = _core.connect(WAREHOUSE_URL)
    return pipeline.sync(
        target=CustomerDim,
        source=Source.postgres_query(
            conn,
            "{CUSTOMER_SQL}",
        ),
        target_connection=conn,
        mode="scd2",
        keys=("customer_id",),
        compare_columns=("email", "name"),
        event_timestamp_column="last_seen",
    )
'''
)

# -- §2 "Where we want to be" -----------------------------------------------------------

SECTION_2_TABLE = """
from typing import Annotated

from ematix_flow import ematix, pk
from ematix_flow.types import BigInt, String, Text, TimestampTZ


@ematix.table(schema="warehouse")
class CustomerDim:
    customer_id: Annotated[BigInt, pk()]
    email: String[256]
    name: Text | None
    last_seen: TimestampTZ
"""

SECTION_2 = (
    SECTION_2_TABLE
    + f'''

@ematix.pipeline(
    target=CustomerDim,
    schedule="0 * * * *",
    mode="scd2",
    event_timestamp_column="last_seen",
)
def customer_sync(conn):
    return "{CUSTOMER_SQL}"
'''
)

# -- §4 "Putting it all together", Today ------------------------------------------------

SECTION_4_TODAY_TABLE = """
from ematix_flow import _core, pipeline
from ematix_flow.source import Source
from ematix_flow.table import ManagedTable
from ematix_flow.types import BigInt, Boolean, Column, Date, Numeric, TimestampTZ

OLTP_URL = "postgres://oltp_user:pass@oltp/main"
WAREHOUSE_URL = "postgres://wh_user:pass@warehouse/wh"


class UserPurchaseFeatures(ManagedTable):
    __schema__ = "features"
    __tablename__ = "user_purchase_features_v1"

    user_id = Column(BigInt(), nullable=False, primary_key=True)
    period_start = Column(Date(), nullable=False, primary_key=True)
    total_spend = Column(Numeric(12, 2))
    order_count = Column(BigInt())
    is_subscriber = Column(Boolean(), nullable=False)
    last_event_ts = Column(TimestampTZ(), nullable=False)
"""

SECTION_4_TODAY = (
    SECTION_4_TODAY_TABLE
    + f'''

@pipeline.register(
    name="user_purchase_features_sync",
    schedule="0 */6 * * *",
)
def sync_user_purchase_features():
    src = _core.connect(OLTP_URL)
    tgt = _core.connect(WAREHOUSE_URL)
    return pipeline.sync(
        target=UserPurchaseFeatures,
        source=Source.postgres_query(src, """{PURCHASES_SQL}"""),
        target_connection=tgt,
        mode="scd2",
        keys=("user_id", "period_start"),
        compare_columns=("total_spend", "order_count", "is_subscriber"),
        event_timestamp_column="last_event_ts",
    )
'''
)

# -- §4 "Putting it all together", After ------------------------------------------------

SECTION_4_AFTER_TABLE = """
from typing import Annotated

from ematix_flow import ematix, pk
from ematix_flow.types import BigInt, Boolean, Date, Numeric, TimestampTZ


@ematix.table(schema="features", name="user_purchase_features_v1")
class UserPurchaseFeatures:
    user_id: Annotated[BigInt, pk()]
    period_start: Annotated[Date, pk()]
    total_spend: Numeric[12, 2] | None
    order_count: BigInt | None
    is_subscriber: Boolean
    last_event_ts: TimestampTZ
"""

SECTION_4_AFTER = (
    SECTION_4_AFTER_TABLE
    + f'''

@ematix.pipeline(
    target=UserPurchaseFeatures,
    schedule="0 */6 * * *",
    mode="scd2",
    event_timestamp_column="last_event_ts",
    source_connection="oltp",
    target_connection="warehouse",
)
def sync_user_purchase_features(src_conn, tgt_conn):
    return """{PURCHASES_SQL}"""
'''
)

_PIPELINE_CALL = "@ematix.pipeline(\n"
_CALL_END = "\n)\n"


def with_options(text: str, **options: Any) -> str:
    """``text`` with ``options`` added as keyword arguments (their ``repr``) to the end of
    its one ``@ematix.pipeline(...)`` call."""
    if text.count(_PIPELINE_CALL) != 1:
        raise ValueError("with_options: the text must hold exactly one @ematix.pipeline(...)")
    head, call, rest = text.partition(_PIPELINE_CALL)
    arguments, end, tail = rest.partition(_CALL_END)
    added = "".join(f"\n    {key}={value!r}," for key, value in options.items())
    return head + call + arguments + added + end + tail


def load(text: str, **module_globals: Any) -> types.ModuleType:
    """Execute ``text`` as a new module of a unique name (kept in ``sys.modules``, as an
    import would keep it); then set ``module_globals`` (names the text defines, such as
    ``WAREHOUSE_URL``) in it."""
    name = f"spec_example_{uuid.uuid4().hex[:12]}"
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(text, f"<{name}>", "exec"), module.__dict__)
    unknown = sorted(set(module_globals) - set(module.__dict__))
    if unknown:
        raise ValueError(f"load: the example defines no {', '.join(unknown)}")
    module.__dict__.update(module_globals)
    return module


def write(folder: Path, text: str, module: str | None = None) -> str:
    """Write ``text`` as ``folder/<module>.py`` (a unique name unless given) and return
    the module name to pass to ``flow … --module``."""
    module = module or f"spec_example_{uuid.uuid4().hex[:12]}"
    (Path(folder) / f"{module}.py").write_text(text, encoding="utf-8")
    return module
