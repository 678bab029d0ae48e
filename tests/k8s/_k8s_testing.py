"""Validation helpers for the Kubernetes tests: official schemas and our CRD's schema.

* :func:`validate_strict` checks a built-in object (CronJob, Deployment, CRD, …) with
  ``kubernetes-validate`` against the official schemas of :data:`K8S_VERSION`, strict
  (unknown fields are errors). A kind without an official schema is an error here, not
  the warning the command line prints: every built-in kind we emit must be checked.
* :func:`validate_custom` checks an ``EmatixPipeline`` with ``jsonschema`` against the
  ``openAPIV3Schema`` of the CRD file in ``crds/`` (what the API server would enforce).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

#: Kubernetes version whose official schemas the manifests are checked against.
K8S_VERSION = "1.33"
#: The oldest version the chart supports (``kubeVersion`` in Chart.yaml): checked too.
K8S_MIN_VERSION = "1.29"
REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "crds" / "emtxpipelines.ematix.io.yaml"


def load_all(text: str) -> list[dict[str, Any]]:
    """Every non-empty YAML document of ``text``."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate_strict(doc: dict[str, Any]) -> None:
    """Fail the test unless ``doc`` is a valid object of the official schemas (strict),
    for :data:`K8S_VERSION` and for :data:`K8S_MIN_VERSION`."""
    for version in (K8S_VERSION, K8S_MIN_VERSION):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            name = doc.get("metadata", {}).get("name")
            raise AssertionError(
                f"Kubernetes {version}: {doc.get('kind')}/{name}: {where}: {exc.message}"
            ) from None
        except kubernetes_validate.SchemaNotFoundError as exc:
            raise AssertionError(exc.message) from None


@functools.cache
def crd_schema() -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the committed CRD file."""
    (crd,) = load_all(CRD_PATH.read_text(encoding="utf-8"))
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def custom_errors(doc: dict[str, Any]) -> list[str]:
    """Every violation of the CRD schema by ``doc`` (empty when it is valid)."""
    validator = jsonschema.Draft202012Validator(crd_schema())
    return [
        f"{'.'.join(str(p) for p in err.absolute_path)}: {err.message}"
        for err in validator.iter_errors(doc)
    ]


def validate_custom(doc: dict[str, Any]) -> None:
    """Fail the test unless ``doc`` is a valid ``EmatixPipeline`` for our CRD."""
    assert doc["apiVersion"] == "ematix.io/v1alpha1"
    assert doc["kind"] == "EmatixPipeline"
    errors = custom_errors(doc)
    assert not errors, errors
