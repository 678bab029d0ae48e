"""The test API server keeps the contract kopf relies on (the gaps of plain kmock 0.8)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from operator_harness import RESOURCE, Cluster, spec

pytestmark = pytest.mark.k8s


def _request(cluster: Cluster, method: str, path: str, body: Any = None, **headers: str) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(cluster.url + path, data=data, method=method, headers=headers)
    req.add_header("Content-Type", headers.get("Content-Type", "application/json"))
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_create_stamps_metadata_and_answers_201(cluster: Cluster) -> None:
    path = "/apis/ematix.io/v1alpha1/namespaces/emu/emtxpipelines"
    code, raw = _request(cluster, "POST", path, {"metadata": {"name": "a"}, "spec": spec()})
    assert code == 201
    meta = json.loads(raw)["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    code, _ = _request(cluster, "POST", path, {"metadata": {"name": "a"}, "spec": spec()})
    assert code == 409
    code, raw = _request(
        cluster, "POST", "/api/v1/namespaces/emu/events", {"metadata": {"generateName": "a."}}
    )
    assert code == 201 and json.loads(raw)["metadata"]["name"].startswith("a.")


def test_changes_bump_resource_version_and_generation(cluster: Cluster) -> None:
    created = cluster.create_pipeline("emu", "b", spec())
    rv = int(created["metadata"]["resourceVersion"])
    path = "/apis/ematix.io/v1alpha1/namespaces/emu/emtxpipelines/b"
    merge = {"Content-Type": "application/merge-patch+json"}
    code, raw = _request(cluster, "PATCH", path, {"metadata": {"labels": {"x": "1"}}}, **merge)
    meta = json.loads(raw)["metadata"]
    assert code == 200 and int(meta["resourceVersion"]) > rv and meta["generation"] == 1
    code, raw = _request(cluster, "PATCH", path, {"spec": {"suspend": True}}, **merge)
    assert json.loads(raw)["metadata"]["generation"] == 2
    # A no-op patch changes nothing, not even the resourceVersion.
    before = cluster.pipeline("emu", "b")["metadata"]["resourceVersion"]
    _request(cluster, "PATCH", path, {"spec": {"suspend": True}}, **merge)
    assert cluster.pipeline("emu", "b")["metadata"]["resourceVersion"] == before
    # Status only through the status subresource.
    _request(cluster, "PATCH", path, {"status": {"consecutiveFailures": 5}}, **merge)
    assert "status" not in cluster.pipeline("emu", "b")
    _request(cluster, "PATCH", path + "/status", {"status": {"consecutiveFailures": 5}}, **merge)
    assert cluster.status("emu", "b") == {"consecutiveFailures": 5}
    # A stale resourceVersion is a conflict; a failed JSON-patch test is 422.
    stale = {"metadata": {"resourceVersion": str(rv)}, "spec": {"suspend": False}}
    assert _request(cluster, "PATCH", path, stale, **merge)[0] == 409
    test = [{"op": "test", "path": "/metadata/resourceVersion", "value": str(rv)}]
    code, _ = _request(
        cluster, "PATCH", path, test, **{"Content-Type": "application/json-patch+json"}
    )
    assert code == 422


def test_watch_resumes_from_a_resource_version(cluster: Cluster) -> None:
    first = cluster.create_pipeline("emu-w", "w1", spec())
    cluster.create_pipeline("emu-w", "w2", spec())
    since = first["metadata"]["resourceVersion"]
    path = (
        "/apis/ematix.io/v1alpha1/namespaces/emu-w/emtxpipelines"
        f"?watch=true&resourceVersion={since}&timeoutSeconds=1"
    )
    code, raw = _request(cluster, "GET", path)
    events = [json.loads(line) for line in raw.splitlines() if line.strip()]
    assert code == 200
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "w2")]
    code, raw = _request(cluster, "GET", "/apis/ematix.io/v1alpha1/namespaces/emu-w/emtxpipelines")
    assert json.loads(raw)["metadata"]["resourceVersion"] != "..."


def test_label_selectors_and_namespaces(cluster: Cluster) -> None:
    cluster.create_pipeline("emu-l", "l1", spec())
    path = "/apis/ematix.io/v1alpha1/namespaces/emu-l/emtxpipelines/l1"
    _request(
        cluster,
        "PATCH",
        path,
        {"metadata": {"labels": {"team": "a"}}},
        **{"Content-Type": "application/merge-patch+json"},
    )
    cluster.create_pipeline("emu-l", "l2", spec())
    base = "/apis/ematix.io/v1alpha1/namespaces/emu-l/emtxpipelines?labelSelector="
    for selector, names in [
        ("team=a", ["l1"]),
        ("team!=a", ["l2"]),
        ("!team", ["l2"]),
        ("team", ["l1"]),
    ]:
        _, raw = _request(cluster, "GET", base + selector)
        assert [i["metadata"]["name"] for i in json.loads(raw)["items"]] == names
    _, raw = _request(cluster, "GET", "/api/v1/namespaces")
    assert {"emu-l", "default"} <= {i["metadata"]["name"] for i in json.loads(raw)["items"]}
    assert cluster.get(RESOURCE, "emu-l", "l1")["metadata"]["labels"] == {"team": "a"}
