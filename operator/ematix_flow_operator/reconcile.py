"""What the CronJob of a resource should be, and whether the live one still is: pure.

::

    desired = desired_cronjob(body)                 # InvalidSpecError if it cannot be
    if actual is None:        create(desired)
    elif drifted(desired, actual):  replace(replacement(desired, actual))

The API server adds defaults to what we send (``terminationMessagePath``,
``dnsPolicy``…), so "still as rendered" means every field we render is present with
our value; fields we never set are the server's business. A drifted CronJob is replaced
whole (PUT), which also drops fields an older spec rendered and the new one does not.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kubernetes.utils import parse_quantity

from ematix_flow._errors import ConfigurationError
from ematix_flow._k8s.cronjob import render_cronjob
from ematix_flow_operator.errors import InvalidSpecError
from ematix_flow_operator.spec import parse_spec

__all__ = ["contains", "desired_cronjob", "drifted", "owner_of", "replacement"]


def desired_cronjob(body: Mapping[str, Any], *, default_image: str | None = None) -> dict[str, Any]:
    """The CronJob manifest for the EmatixPipeline ``body`` (as the API returns it).

    ``default_image`` serves a spec without ``image``. Raises
    :class:`~ematix_flow_operator.errors.InvalidSpecError` for a spec that cannot be
    rendered.
    """
    meta = body.get("metadata") or {}
    spec = parse_spec(body.get("spec"))
    try:
        return render_cronjob(
            meta["name"], meta["namespace"], meta["uid"], spec, default_image=default_image
        )
    except ConfigurationError as exc:
        raise InvalidSpecError(
            "MissingImage",
            "spec.image is not set and the operator has no default pipeline image: set "
            "spec.image, or the chart value pipelineImage (--default-image)",
        ) from exc


def contains(actual: Any, wanted: Any) -> bool:
    """Whether ``actual`` holds everything in ``wanted`` (extra dict keys allowed).

    >>> contains({"a": 1, "b": [{"c": 2, "d": 3}]}, {"b": [{"c": 2}]})
    True
    >>> contains({"b": [{"c": 2}, {"c": 4}]}, {"b": [{"c": 2}]})
    False
    """
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and contains(actual[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(contains(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return type(actual) is type(wanted) and actual == wanted  # True is not 1
    return bool(actual == wanted) or _same_quantity(actual, wanted)


def _same_quantity(actual: Any, wanted: Any) -> bool:
    """Whether two scalars are the same Kubernetes quantity written differently: the API
    server normalizes ``cpu: 2`` to ``"2"`` and ``0.5`` to ``"500m"``, which is no drift."""
    scalars = (str, int, float)
    if not (isinstance(actual, scalars) and isinstance(wanted, scalars)):
        return False
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return False
    try:
        return bool(parse_quantity(actual) == parse_quantity(wanted))
    except (ValueError, ArithmeticError):
        return False


def drifted(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    """Whether the live CronJob lost any of the rendered spec, labels or owner."""
    meta, live_meta = desired["metadata"], actual.get("metadata") or {}
    return not (
        contains(actual.get("spec"), desired["spec"])
        and contains(live_meta.get("labels") or {}, meta.get("labels") or {})
        and contains(live_meta.get("ownerReferences") or [], meta.get("ownerReferences") or [])
    )


def replacement(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> dict[str, Any]:
    """The object to PUT over ``actual``: our spec, labels and owner; others' labels and
    annotations kept; ``resourceVersion`` as read, so a concurrent change wins a 409."""
    live_meta = actual.get("metadata") or {}
    body = copy.deepcopy(dict(desired))
    meta = body["metadata"]
    meta["labels"] = {**(live_meta.get("labels") or {}), **(meta.get("labels") or {})}
    annotations = {**(live_meta.get("annotations") or {}), **(meta.get("annotations") or {})}
    if annotations:
        meta["annotations"] = annotations
    meta["resourceVersion"] = live_meta.get("resourceVersion")
    return body


def owner_of(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The owner reference of ``kind`` on ``obj`` (the controller one first)."""
    refs = [
        r for r in (obj.get("metadata") or {}).get("ownerReferences") or () if r.get("kind") == kind
    ]
    refs.sort(key=lambda r: not r.get("controller"))
    return refs[0] if refs else None
