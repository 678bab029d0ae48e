"""Merge-key resolution (spec §3.2), shared by merge, scd1 and scd2.

Order: explicit ``keys=`` → ``__merge_keys__`` → the first unique constraint
(``natural_key()`` / ``__unique_constraints__``) → the primary key. Each answer carries
the reason the preview prints (``[from explicit keys=]`` …). When the natural key wins
over a different primary key, §3.2's warning is returned for the caller to emit once
per run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ematix_flow._errors import DefinitionError
from ematix_flow._tablespec import TableSpec

__all__ = ["ResolvedKeys", "resolve_keys"]


@dataclass(frozen=True)
class ResolvedKeys:
    columns: tuple[str, ...]
    #: ``explicit keys=``, ``__merge_keys__``, ``natural_key()``,
    #: ``__unique_constraints__``, or the table's primary-key form: ``pk()`` or
    #: ``primary_key=True``.
    origin: str
    warning: str | None = None

    @property
    def reason(self) -> str:
        return f"[from {self.origin}]"


def resolve_keys(
    table: TableSpec,
    explicit: tuple[str, ...] | None,
    *,
    pipeline: str,
    mode: str,
    keys_argument_of: str = "pipeline.sync() or pipeline.register()",
) -> ResolvedKeys:
    """The merge keys of ``table`` for a ``mode`` target, with where they came from.

    ``keys_argument_of`` names where the caller's user passes ``keys=`` (the imperative
    functions, or ``@ematix.pipeline`` / ``ematix.target``), for the no-keys error.
    """
    if explicit:
        return ResolvedKeys(tuple(explicit), "explicit keys=")
    if table.merge_keys:
        return ResolvedKeys(tuple(table.merge_keys), "__merge_keys__")
    if table.unique_constraints:
        cols = tuple(table.unique_constraints[0])
        origin = table.unique_origin or "__unique_constraints__"
        warning = None
        if table.primary_key and set(table.primary_key) != set(cols):
            warning = (
                f"Pipeline {pipeline}: merge key resolved to ({', '.join(cols)}) from "
                f"{origin}, which differs from declared primary key "
                f"({', '.join(table.primary_key)}). Pass keys= explicitly to silence this "
                "warning."
            )
        return ResolvedKeys(cols, origin, warning)
    if table.primary_key:
        return ResolvedKeys(tuple(table.primary_key), table.primary_key_form)
    raise DefinitionError(_no_keys_message(table, pipeline, mode, keys_argument_of))


def _no_keys_message(table: TableSpec, pipeline: str, mode: str, keys_argument_of: str) -> str:
    """The four ways to declare merge keys, in the vocabulary the table was written in."""
    if table.primary_key_form == "pk()":  # an @ematix.table class
        ways = (
            f"pass keys=('col', ...) to {keys_argument_of}; "
            "set __merge_keys__ = ('col', ...) in the class body; "
            "mark a natural key with Annotated[<type>, natural_key()]; "
            "or mark the primary-key columns with Annotated[<type>, pk()]"
        )
    else:
        ways = (
            f"pass keys=('col', ...) to {keys_argument_of}; "
            "set __merge_keys__ = ('col', ...) on the table; "
            "declare a unique constraint with __unique_constraints__ = (('col', ...),); "
            "or mark the primary-key columns with Column(..., primary_key=True)"
        )
    return (
        f"pipeline {pipeline!r}: target {table.qualified_name} (mode={mode!r}) has no merge "
        f"keys; declare them in one of four ways: {ways}"
    )
