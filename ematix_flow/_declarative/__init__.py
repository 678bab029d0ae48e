"""The declarative API: ``@ematix.table``, ``@ematix.pipeline``, ``ematix.target`` and
the column markers ``pk()``, ``natural_key()``, ``nullable()`` (spec §3).

Everything here is sugar over the imperative API (spec §7): a decorated class *is* a
``ManagedTable`` subclass with the same ``TableSpec``, and a decorated pipeline is
registered through ``pipeline.register`` and runs through ``pipeline.sync``.
Re-exported from :mod:`ematix_flow`::

    from ematix_flow import ematix, natural_key, nullable, pk
"""

from __future__ import annotations

from ematix_flow._declarative._markers import natural_key, nullable, pk
from ematix_flow._declarative._pipeline import DeclaredPipeline, PipelineSpec, pipeline
from ematix_flow._declarative._table import table
from ematix_flow._declarative._target import Target, target

__all__ = [
    "DeclaredPipeline",
    "PipelineSpec",
    "Target",
    "ematix",
    "natural_key",
    "nullable",
    "pk",
]


class _Ematix:
    """The ``ematix`` namespace: ``@ematix.table``, ``@ematix.pipeline``, ``ematix.target``."""

    __slots__ = ()
    table = staticmethod(table)
    pipeline = staticmethod(pipeline)
    target = staticmethod(target)

    def __repr__(self) -> str:
        return "<ematix namespace: table, pipeline, target>"


ematix = _Ematix()
