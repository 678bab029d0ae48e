"""The columns and constraints the framework adds to a target, per mode.

DESIGN.md's table: ``append`` adds ``_loaded_at``/``_batch_id``; ``scd1`` adds
``row_hash``/``_updated_at``; ``scd2`` adds ``valid_from``/``valid_to``/``is_current``/
``row_hash``; ``handle_deletes="soft"`` on merge/scd1 adds ``_deleted_at``.

SCD2 keys (the choice, and why): in an SCD2 table one business key has many rows, so
the *declared* primary key and unique constraints name the business key. "One current
row per key" is enforced and served by a partial unique index
``<table>_current_key ON (keys) WHERE is_current`` (:func:`current_index_name`), which
the engine creates with the table (or adds to an existing table). The declared unique
constraints are carried with ``valid_from`` appended.

The versions' key ``PRIMARY KEY (customer_id, valid_from)`` is built only where it
earns its cost (``versions_key=True``): closing a version cannot be a HOT update
(``is_current`` is in the current index's predicate), so every closed version adds an
entry to every index on the table — measured, that key alone makes a 10%-changed re-sync
~1.3× slower. ``(keys, valid_from)`` is unique by construction (a new version starts
after the latest one), so the key guards nothing the statements do not; it is built
when the latest-version lookup needs its index (``handle_deletes``, ``ttl``,
``event_timestamp_column``), or when the target database publishes every table's
updates (logical replication needs a replica identity on an updated table). A table
keeps the key it was built with: an existing table without it that starts needing the
lookup gets the plain index ``<table>_versions`` (:func:`versions_index_name`), and one
that a publication starts replicating gets the primary key then.

Append keeps every batch: a declared primary key or unique constraint is carried with
``_batch_id`` appended, so a key loaded again by a later run is a new row, not a
constraint violation.

A merge key that no declared constraint covers (explicit ``keys=``) gets a unique
constraint when the engine creates the table; an existing table without one is refused
by the planner, because ``ON CONFLICT`` needs it.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from ematix_flow._errors import DefinitionError
from ematix_flow._tablespec import MAX_IDENTIFIER_BYTES, ColumnSpec, TableSpec
from ematix_flow.types import Boolean, Text, TimestampTZ, Uuid

__all__ = [
    "current_index_name",
    "framework_columns",
    "mode_of",
    "physical_table",
    "versions_index_name",
    "watermark_index_name",
]


def framework_columns(mode: str, handle_deletes: str | None) -> tuple[ColumnSpec, ...]:
    out: list[ColumnSpec] = []
    if mode == "append":
        out += [
            ColumnSpec("_loaded_at", TimestampTZ(), nullable=False, framework=True),
            ColumnSpec("_batch_id", Uuid(), nullable=False, framework=True),
        ]
    elif mode == "scd1":
        out += [
            ColumnSpec("row_hash", Text(), nullable=False, framework=True),
            ColumnSpec("_updated_at", TimestampTZ(), nullable=False, framework=True),
        ]
    elif mode == "scd2":
        out += [
            ColumnSpec("valid_from", TimestampTZ(), nullable=False, framework=True),
            ColumnSpec("valid_to", TimestampTZ(), nullable=True, framework=True),
            ColumnSpec("is_current", Boolean(), nullable=False, framework=True),
            ColumnSpec("row_hash", Text(), nullable=False, framework=True),
        ]
    if handle_deletes == "soft" and mode in ("merge", "scd1"):
        out.append(ColumnSpec("_deleted_at", TimestampTZ(), nullable=True, framework=True))
    return tuple(out)


def mode_of(table: TableSpec) -> str | None:
    """The mode a reflected table was built for, read from its framework columns
    (``merge`` adds none: a table with none of them reads as merge)."""
    names = set(table.column_names)
    for mode in ("scd2", "scd1", "append"):
        if all(c.name in names for c in framework_columns(mode, None)):
            return mode
    return "merge"


def _covered(keys: tuple[str, ...], constraints: list[tuple[str, ...]]) -> bool:
    return any(set(keys) == set(c) for c in constraints)


def physical_table(
    declared: TableSpec,
    *,
    mode: str,
    keys: tuple[str, ...],
    handle_deletes: str | None,
    existing: TableSpec | None,
    versions_key: bool = True,
) -> TableSpec:
    """The table as it exists in the database: declared columns + framework columns,
    and the constraints of the module docstring. ``existing`` is the reflected table
    (``None`` when it will be created or is unknown); ``versions_key``: a new scd2
    table gets ``PRIMARY KEY (keys, valid_from)`` (an existing one keeps what it has)."""
    base = replace(
        declared,
        columns=tuple(c for c in declared.columns if not c.framework),
    )
    extra = framework_columns(mode, handle_deletes)
    for col in extra:
        if base.has_column(col.name):
            raise DefinitionError(
                f"target {declared.qualified_name} declares column {col.name!r}, which "
                f"mode={mode!r} adds itself; rename the column or choose another mode"
            )
    pk = tuple(base.primary_key)
    uniques = [tuple(u) for u in base.unique_constraints]
    wanted: tuple[str, ...] | None
    if mode == "scd2":
        versions = (*keys, "valid_from")
        keep = (
            bool(existing.primary_key) or versions in set(existing.unique_constraints)
            if existing is not None
            else versions_key
        )
        pk = (*pk, "valid_from") if pk and keep else ()
        uniques = [(*u, "valid_from") for u in uniques]
        wanted = versions if keep else None
    elif mode == "append":
        # Every batch is kept: a key identifies a row within its batch (a key
        # loaded again by a later run is a new row), as valid_from does for scd2. A
        # table built before that keeps its constraints (and their meaning).
        legacy = existing is not None and pk and tuple(existing.primary_key) == pk
        if not legacy:
            pk = (*pk, "_batch_id") if pk else ()
        kept = set(existing.unique_constraints) if existing is not None else set()
        uniques = [u if u in kept else (*u, "_batch_id") for u in uniques]
        wanted = keys
    else:
        wanted = keys
    if keys and wanted is not None and not _covered(wanted, [pk, *uniques]):
        has_it = existing is not None and wanted in existing.unique_constraints
        if existing is None or has_it:
            uniques.append(wanted)
    return replace(
        base,
        columns=base.columns + extra,
        primary_key=pk,
        unique_constraints=tuple(uniques),
    )


def _index_name(stem: str, suffix: str) -> str:
    name = f"{stem}{suffix}"
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(stem.encode()).hexdigest()[:8]
    tail = f"_{digest}{suffix}"
    head = stem.encode()[: MAX_IDENTIFIER_BYTES - len(tail)].decode(errors="ignore")
    return head + tail


def versions_index_name(table: TableSpec) -> str:
    """``<table>_versions``, shortened with a hash beyond 63 bytes."""
    return _index_name(table.name, "_versions")


def current_index_name(table: TableSpec) -> str:
    """``<table>_current_key``, shortened with a hash beyond 63 bytes."""
    return _index_name(table.name, "_current_key")


def watermark_index_name(table: TableSpec, column: str) -> str:
    """``<table>_<column>_watermark``: an incremental append without keys finds the rows
    it already loaded at the watermark's value through it."""
    return _index_name(f"{table.name}_{column}", "_watermark")
