"""The ``EmatixPipeline`` CustomResourceDefinition, generated from the pydantic model.

:func:`build_crd` turns the JSON schemas of :class:`~ematix_flow._k8s.model.EmatixPipelineSpec`
and :class:`~ematix_flow._k8s.model.EmatixPipelineStatus` into a *structural* OpenAPI v3
schema (Kubernetes' subset: ``$ref`` inlined, optional fields without their ``null``
branch, no ``additionalProperties: false``, no titles) and wraps it into the CRD with the
status subresource and the printer columns.

The files that hold the CRD are generated, never edited by hand::

    python -m ematix_flow._k8s.crd            # rewrites crds/ and the chart's CRD template
    python -m ematix_flow._k8s.crd --check    # exit 1 when a file differs from the model

A test runs the ``--check`` logic, so the files cannot drift from the model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from ematix_flow._k8s import model

__all__ = [
    "CHART_CRD_TEMPLATE",
    "CRD_FILE",
    "PRINTER_COLUMNS",
    "build_crd",
    "chart_crd_template",
    "crd_yaml",
    "generated_files",
    "openapi_schema",
]

#: The CRD file, relative to the repository root.
CRD_FILE = Path("crds") / f"{model.CRD_NAME}.yaml"
#: The chart's CRD template, relative to the repository root.
CHART_CRD_TEMPLATE = Path("charts") / "ematix-flow-operator" / "templates" / "crd.yaml"

PRINTER_COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Pipeline", "type": "string", "jsonPath": ".spec.pipeline", "priority": 1},
    {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
    {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
    {"name": "Last Run", "type": "date", "jsonPath": ".status.lastScheduleTime"},
    {"name": "Result", "type": "string", "jsonPath": ".status.lastRun.phase"},
    {
        "name": "Failures",
        "type": "integer",
        "jsonPath": ".status.consecutiveFailures",
        "priority": 1,
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)

_GENERATED_HEADER = (
    "# Generated from ematix_flow/_k8s/model.py by `python -m ematix_flow._k8s.crd`.\n"
    "# Do not edit by hand: change the model and regenerate.\n"
)

# Key order of a schema node in the output, so the file reads top-down.
_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "default",
    "anyOf",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "required",
    "items",
    "additionalProperties",
    "properties",
)
_DROPPED = {"title", "$defs"}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref`` and drop the ``null`` branch of optional fields."""
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        node = {**defs[ref.rsplit("/", 1)[-1]], **node}
    any_of = node.get("anyOf")
    if any_of is not None:
        branches = [b for b in any_of if b != {"type": "null"}]
        if len(branches) != len(any_of):
            del node["anyOf"]
            if node.get("default", ...) is None:
                del node["default"]
            if len(branches) == 1:
                node = {**_resolve(branches[0], defs), **node}
            else:
                node["anyOf"] = branches
    return node


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One JSON-schema node (pydantic's output) → a structural OpenAPI v3 node."""
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "additionalProperties" and value is False:
            # v1 CRDs reject `false`; the API server prunes unknown fields instead.
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs)
        elif key == "anyOf":
            out[key] = [_structural(sub, defs) for sub in value]
        else:
            out[key] = value
    rank = {key: i for i, key in enumerate(_KEY_ORDER)}
    return dict(sorted(out.items(), key=lambda item: rank.get(item[0], len(rank))))


def openapi_schema(cls: type[model._Model]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model class (its camelCase form)."""
    raw = cls.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of ``EmatixPipeline`` as a dict.

    Example::

        crd = build_crd()
        crd["metadata"]["name"]          # 'emtxpipelines.ematix.io'
    """
    spec_schema = openapi_schema(model.EmatixPipelineSpec)
    status_schema = openapi_schema(model.EmatixPipelineStatus)
    root = {
        "description": (
            "A scheduled ematix-flow pipeline. The operator renders it into a CronJob "
            "running `flow run <pipeline> --module <module>` and reports runs in status."
        ),
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": model.CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "ematix-flow",
                "app.kubernetes.io/part-of": "ematix-flow",
            },
        },
        "spec": {
            "group": model.GROUP,
            "names": {
                "kind": model.KIND,
                "listKind": f"{model.KIND}List",
                "plural": model.PLURAL,
                "singular": model.SINGULAR,
                "shortNames": list(model.SHORT_NAMES),
                "categories": list(model.CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": model.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(c) for c in PRINTER_COLUMNS],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def _dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)


def crd_yaml() -> str:
    """The content of ``crds/<name>.yaml``."""
    return _GENERATED_HEADER + "---\n" + _dump(build_crd())


def chart_crd_template() -> str:
    """The chart's ``templates/crd.yaml``: the same CRD, switchable, kept on uninstall."""
    crd = build_crd()
    crd["metadata"] = {
        "name": model.CRD_NAME,
        "annotations": {"helm.sh/resource-policy": "keep"},
        "labels": {"__HELM_LABELS__": "x"},
    }
    body = _dump(crd).replace(
        "    __HELM_LABELS__: x\n",
        '    {{- include "ematix-flow-operator.labels" . | nindent 4 }}\n',
    )
    comment = _GENERATED_HEADER.replace("# ", "")
    return "{{- /*\n" + comment + "*/}}\n{{- if .Values.crds.create }}\n" + body + "{{- end }}\n"


def generated_files() -> dict[Path, str]:
    """Every generated file (path relative to the repository root) and its content."""
    return {CRD_FILE: crd_yaml(), CHART_CRD_TEMPLATE: chart_crd_template()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ematix_flow._k8s.crd",
        description="Regenerate crds/ and the chart's CRD template from the model.",
    )
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root")
    parser.add_argument(
        "--check", action="store_true", help="only report files that differ; exit 1 if any"
    )
    args = parser.parse_args(argv)
    stale = []
    for rel, content in generated_files().items():
        path = args.root / rel
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            print(f"wrote {rel}")
    if args.check and stale:
        for rel in stale:
            print(f"{rel} differs from the model; run `python -m ematix_flow._k8s.crd`")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
