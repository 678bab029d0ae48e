"""Rendering of previews and dry runs (spec §3.5): the explainer.

- :mod:`.document` — the report as one plain, stable, password-free dict (the
  ``--format json`` output; schema in ``preview.schema.json``, documented in
  ``docs/preview-json.md``);
- :mod:`.text` — that dict drawn with rich: the compact multi-target summary and the
  verbose per-target plan.

A front end: called by ``flow preview`` / ``flow dry-run``; never imported by the engine
or the pipelines layer. Import :mod:`.text` only where rich may be loaded.
"""

from __future__ import annotations

from ematix_flow._preview.document import SCHEMA_VERSION, document, schema, to_json

__all__ = ["SCHEMA_VERSION", "document", "schema", "to_json"]
