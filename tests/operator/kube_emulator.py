"""A stateful Kubernetes API for the operator tests: ``kmock``'s emulator made strict enough
for kopf.

``kmock.KubernetesEmulator`` (0.8) stores objects as posted. A kopf operator needs more of
the API server's contract, so this subclass adds, in one place:

* metadata stamping on create: ``uid``, ``resourceVersion``, ``creationTimestamp``,
  ``generation``; ``generateName`` filled in (kopf names its Events that way);
* one cluster-wide ``resourceVersion`` counter, bumped on every change (a no-op patch
  changes nothing, as on a real server); ``generation`` bumped when anything but
  metadata and status changes;
* create answers 201, a duplicate 409, a missing object 404, a failed JSON-patch ``test``
  or a stale ``metadata.resourceVersion`` 409/422 like the real server;
* JSON patch, merge patch (RFC 7386: lists replaced, ``null`` removes), PUT (replace),
  the ``status`` subresource (only status changes there, never through the main path);
* watches honour ``resourceVersion`` (no replay of what the client already listed),
  ``timeoutSeconds``, equality/existence ``labelSelector``; lists report the real
  ``resourceVersion``;
* deletion honours finalizers and garbage-collects dependents by owner reference uid,
  background propagation; a dependent created after its owner is gone is collected too;
* the cluster-scoped ``/api/v1/namespaces`` list and watch (kmock's path parser expects
  a namespace there), so ``kopf run --namespace X`` works against it;
* ``fail_next()`` injects API errors (e.g. a 500 on the next CronJob create).

Nothing runs CronJobs, Jobs or Pods: tests create those objects themselves.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import json
import random
import re
import string
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import rendering

__all__ = ["Call", "StrictEmulator", "label_selector_matches"]

NAMESPACES_PATH = re.compile(r"^/api/v1/namespaces/?$")


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, ``None`` removes, others replace."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def label_selector_matches(selector: str | None, labels: dict[str, str] | None) -> bool:
    """Equality-, inequality-, set- and existence-based label selectors, as the API server."""
    if not selector:
        return True
    labels = labels or {}
    for term in re.split(r",(?![^()]*\))", selector):
        term = term.strip()
        if not term:
            continue
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\((.*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            inside = key in labels and labels[key] in values
            if inside != (op == "in"):
                return False
        elif "!=" in term:
            key, value = (part.strip() for part in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class _Watcher:
    resource: Any  # None: the namespaces watch
    namespace: str | None
    selector: str | None
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    def wants(self, resource: Any, event: dict[str, Any]) -> bool:
        meta = event["object"].get("metadata", {})
        return (
            self.resource is not None
            and resource == self.resource
            and (self.namespace is None or meta.get("namespace") == self.namespace)
            and label_selector_matches(self.selector, meta.get("labels"))
        )


class Call(NamedTuple):
    """One request as the emulator saw it."""

    method: str
    path: str
    query: str
    agent: str


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    status: int
    remaining: int


def _status(code: int, reason: str, message: str, **details: Any) -> aiohttp.web.Response:
    return aiohttp.web.json_response(
        {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure" if code >= 400 else "Success",
            "code": code,
            "reason": reason,
            "message": message,
            "details": details,
        },
        status=code,
    )


class _ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@attrs.define(kw_only=True)
class StrictEmulator(kmock.KubernetesEmulator):
    """``kmock.KubernetesEmulator`` with the API-server behaviour a kopf operator relies on."""

    _counter: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    _current_rv: int = attrs.field(default=0, init=False)
    _log: list[tuple[int, Any, dict[str, Any]]] = attrs.field(factory=list, init=False)
    _watchers: list[_Watcher] = attrs.field(factory=list, init=False)
    _faults: list[_Fault] = attrs.field(factory=list, init=False)
    namespaces: set[str] = attrs.field(factory=lambda: {"default"})
    #: Every request served, failed or not.
    calls: list[Call] = attrs.field(factory=list, init=False)

    # --- test helpers -------------------------------------------------------------------

    def fail_next(self, method: str, path: str, *, status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` requests of ``method`` whose path matches ``path``."""
        self._faults.append(_Fault(method.upper(), re.compile(path), status, times))

    def drop_watches(self) -> int:
        """End every open watch stream, as a restarted API server or a proxy would."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)  # type: ignore[arg-type]
        return len(self._watchers)

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object (a copy), or None when absent or deleted."""
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        res = kmock.resource(resource)
        return [
            copy.deepcopy(obj.raw)
            for (r, ns, _), obj in self.objects.items()
            if r == res and not obj.deleted and (namespace is None or ns == namespace)
        ]

    # --- the HTTP entry point -----------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        await raw_request.read()
        agent = raw_request.headers.get("User-Agent", "")
        self.calls.append(
            Call(raw_request.method, raw_request.path, raw_request.query_string, agent)
        )
        for fault in self._faults:
            if (
                fault.remaining > 0
                and fault.method == raw_request.method
                and fault.path.search(raw_request.path)
            ):
                fault.remaining -= 1
                return _status(fault.status, "InternalError", "injected by the test")
        if NAMESPACES_PATH.match(raw_request.path) and raw_request.method == "GET":
            return await self._serve_namespaces(raw_request)
        return await super().__call__(raw_request)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None:
            return await super()._handle(request)
        method = str(request.method.value).upper() if request.method else ""
        try:
            if request.action == kmock.action.CREATE:
                async with self._lock:
                    obj = await self._create(request)
                return aiohttp.web.json_response(obj, status=201)
            if request.name is not None and method in {"PATCH", "PUT"}:
                async with self._lock:
                    obj = await self._update(request, replace=method == "PUT")
                return aiohttp.web.json_response(obj)
            if request.name is not None and method == "DELETE":
                async with self._lock:
                    obj = await self._delete(request.resource, request.namespace, request.name)
                return aiohttp.web.json_response(obj)
        except _ApiError as exc:
            return _status(exc.code, exc.reason, exc.message)
        return await super()._handle(request)

    # --- state changes (called under the lock) ------------------------------------------

    def _info(self, resource: Any) -> kmock.ResourceInfo:
        try:
            return self.resources[resource]
        except KeyError:
            raise _ApiError(404, "NotFound", f"the server could not find {resource}") from None

    def _next_rv(self) -> str:
        self._current_rv = next(self._counter)
        return str(self._current_rv)

    async def _publish(self, resource: Any, event_type: str, obj: dict[str, Any]) -> None:
        event = {"type": event_type, "object": copy.deepcopy(obj)}
        self._log.append((self._current_rv, resource, event))
        for watcher in self._watchers:
            if watcher.wants(resource, event):
                watcher.queue.put_nowait(event)

    async def _create(self, request: rendering.Request) -> dict[str, Any]:
        info = self._info(request.resource)
        obj = copy.deepcopy(request.data) if isinstance(request.data, dict) else None
        if obj is None:
            raise _ApiError(400, "BadRequest", "the body of a create must be a JSON object")
        meta = obj.setdefault("metadata", {})
        if info.namespaced:
            namespace = request.namespace or meta.get("namespace")
            if not namespace:
                raise _ApiError(400, "BadRequest", "a namespaced object needs a namespace")
            meta["namespace"] = namespace
            if namespace not in self.namespaces:
                self.namespaces.add(namespace)
                await self._publish_namespace(namespace)
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            meta["name"] = meta["generateName"] + suffix
        if not meta.get("name"):
            raise _ApiError(422, "Invalid", "metadata.name or metadata.generateName is required")
        key = (request.resource, meta.get("namespace"), meta["name"])
        if key in self.objects and not self.objects[key].deleted:
            raise _ApiError(409, "AlreadyExists", f"{info.kind} {meta['name']!r} already exists")
        if request.resource.group:
            obj.setdefault("apiVersion", f"{request.resource.group}/{request.resource.version}")
        else:
            obj.setdefault("apiVersion", request.resource.version)
        obj.setdefault("kind", info.kind)
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=self._next_rv(),
            creationTimestamp=_now(),
            generation=1,
        )
        meta.pop("deletionTimestamp", None)
        if key in self.objects:
            self.objects[key].create(obj)
        else:
            self.objects[key] = obj
        await self._publish(request.resource, "ADDED", obj)
        # The garbage collector removes dependents whose owner no longer exists.
        owners = {ref.get("uid") for ref in meta.get("ownerReferences") or ()}
        if owners and not owners & self._live_uids():
            await self._remove(request.resource, key, obj)
        return obj

    def _live_uids(self) -> set[str]:
        return {
            obj.raw.get("metadata", {}).get("uid")
            for obj in self.objects.values()
            if not obj.deleted
        }

    async def _update(self, request: rendering.Request, *, replace: bool) -> dict[str, Any]:
        info = self._info(request.resource)
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise _ApiError(404, "NotFound", f"{info.kind} {request.name!r} not found")
        old = copy.deepcopy(self.objects[key].raw)
        body = request.data
        try:
            if replace:
                new = copy.deepcopy(body)
            elif isinstance(body, list):
                new = jsonpatch.apply_patch(old, body, in_place=False)
            elif isinstance(body, dict):
                new = merge_patch(old, body)
            else:
                raise _ApiError(400, "BadRequest", "a patch must be a JSON object or list")
        except jsonpatch.JsonPatchTestFailed as exc:
            raise _ApiError(422, "Invalid", f"the JSON-patch test failed: {exc}") from exc
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise _ApiError(422, "Invalid", f"the JSON patch does not apply: {exc}") from exc

        # A resourceVersion in the body is a precondition, as on the real server.
        wanted_rv = (
            (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        )
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise _ApiError(409, "Conflict", "the object has been modified; reload and retry")

        # The status subresource changes only status; the main path never changes status.
        if "status" in info.subresources:
            if request.subresource == "status":
                new = dict(old, status=new.get("status"))
                if new["status"] is None:
                    del new["status"]
            else:
                new = {k: v for k, v in new.items() if k != "status"}
                if "status" in old:
                    new["status"] = old["status"]
        meta = new.setdefault("metadata", {})
        for fixed in ("uid", "creationTimestamp", "name", "namespace", "generation"):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
            else:
                meta.pop(fixed, None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return new
        strip = {"metadata", "status"}
        if {k: v for k, v in new.items() if k not in strip} != {
            k: v for k, v in old.items() if k not in strip
        }:
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_rv()
        self.objects[key].history.append(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            await self._publish(request.resource, "MODIFIED", new)
            await self._remove(request.resource, key, new)
        else:
            await self._publish(request.resource, "MODIFIED", new)
        return new

    async def _delete(self, resource: Any, namespace: str | None, name: str) -> dict[str, Any]:
        info = self._info(resource)
        key = (resource, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            raise _ApiError(404, "NotFound", f"{info.kind} {name!r} not found")
        obj = copy.deepcopy(self.objects[key].raw)
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["metadata"]["resourceVersion"] = self._next_rv()
                self.objects[key].history.append(obj)
                await self._publish(resource, "MODIFIED", obj)
            return obj
        await self._remove(resource, key, obj)
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "kind": resource.plural, "uid": obj["metadata"].get("uid")},
        }

    async def _remove(self, resource: Any, key: Any, obj: dict[str, Any]) -> None:
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self.objects[key].delete()
        await self._publish(resource, "DELETED", obj)
        # Garbage collection (background propagation): dependents go with their owner.
        uid = obj["metadata"].get("uid")
        dependents = [
            (res, ns, nm)
            for (res, ns, nm), dep in list(self.objects.items())
            if not dep.deleted
            and any(
                ref.get("uid") == uid
                for ref in dep.raw.get("metadata", {}).get("ownerReferences", [])
            )
        ]
        for res, ns, nm in dependents:
            if not self.objects[res, ns, nm].deleted:
                await self._delete(res, ns, nm)

    # --- reads --------------------------------------------------------------------------

    def _matching(self, request: rendering.Request) -> list[dict[str, Any]]:
        selector = request.params.get("labelSelector")
        return [
            obj.raw
            for (res, ns, _), obj in self.objects.items()
            if res == request.resource
            and not obj.deleted
            and (request.namespace is None or ns == request.namespace)
            and label_selector_matches(selector, obj.raw.get("metadata", {}).get("labels"))
        ]

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        self._info(request.resource)
        async with self._lock:
            items = copy.deepcopy(self._matching(request))
            rv = str(self._current_rv)
        return {
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""  # send the headers now, even if nothing happens for a while
        since = request.params.get("resourceVersion")
        timeout = request.params.get("timeoutSeconds")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(timeout) if timeout else None
        watcher = _Watcher(request.resource, request.namespace, request.params.get("labelSelector"))
        async with self._lock:
            if since and since != "0":
                backlog = [
                    ev for rv, res, ev in self._log if rv > int(since) and watcher.wants(res, ev)
                ]
            else:
                backlog = [
                    {"type": "ADDED", "object": copy.deepcopy(obj)}
                    for obj in self._matching(request)
                ]
            self._watchers.append(watcher)
        try:
            for event in backlog:
                yield event
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    return
                if event is None:  # dropped by the test
                    return
                yield event
        finally:
            self._watchers.remove(watcher)

    async def _publish_namespace(self, name: str) -> None:
        event = {
            "type": "ADDED",
            "object": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        }
        for watcher in self._watchers:
            if watcher.resource is None:
                watcher.queue.put_nowait(event)

    async def _serve_namespaces(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        def ns(name: str) -> dict[str, Any]:
            return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}

        if raw.query.get("watch") not in {"true", "1"}:
            items = [ns(name) for name in sorted(self.namespaces)]
            return aiohttp.web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "NamespaceList",
                    "metadata": {"resourceVersion": str(self._current_rv)},
                    "items": items,
                }
            )
        response = aiohttp.web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(raw)
        watcher = _Watcher(None, None, None)
        self._watchers.append(watcher)
        timeout = raw.query.get("timeoutSeconds")
        try:
            if not raw.query.get("resourceVersion"):
                for name in sorted(self.namespaces):
                    line = {"type": "ADDED", "object": ns(name)}
                    await response.write(json.dumps(line).encode() + b"\n")
            while True:
                try:
                    event = await asyncio.wait_for(
                        watcher.queue.get(), float(timeout) if timeout else None
                    )
                except TimeoutError:
                    break
                if event is None:  # dropped by the test
                    break
                await response.write(json.dumps(event).encode() + b"\n")
        finally:
            self._watchers.remove(watcher)
        await response.write_eof()
        return response
