"""The per-target option keywords: their names and ``NOT_GIVEN``, the default of each.

:func:`ematix_flow.pipeline.sync` and the decorators in ``ematix_flow._declarative``
take the same option keywords, but sit in different layers: the decorators are sugar
over the pipelines layer. What both need lives here, below both and importing nothing,
so the pipelines layer never imports the declarative one.

Example::

    >>> def sync(*, handle_deletes=NOT_GIVEN): ...
    >>> NOT_GIVEN
    NOT_GIVEN
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["NOT_GIVEN", "OPTION_NAMES", "NotGiven"]


class NotGiven(enum.Enum):
    """The type of :data:`NOT_GIVEN`: an option the caller did not pass.

    ``None`` is a real value for several options (``handle_deletes=None`` keeps rows,
    ``ttl=None`` never expires, ``keys=None`` infers the keys), so a level can pass
    ``None`` to switch off a lower level's default; only ``NOT_GIVEN`` falls through.
    """

    NOT_GIVEN = "NOT_GIVEN"

    def __repr__(self) -> str:
        return "NOT_GIVEN"


#: The default of every per-target option keyword of ``pipeline.sync`` and the decorators.
NOT_GIVEN: Final = NotGiven.NOT_GIVEN

#: Every option that can be set per target, in the order of ``pipeline.sync``.
OPTION_NAMES: Final = (
    "mode",
    "keys",
    "compare_columns",
    "update_columns",
    "event_timestamp_column",
    "ttl",
    "handle_deletes",
    "incremental_column",
    "incremental_lookback",
    "lock_timeout",
    "statement_timeout",
)
