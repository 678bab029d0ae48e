"""Run the API emulator and the real operator in threads; talk to both like a user.

* :class:`Cluster` — :class:`~kube_emulator.StrictEmulator` served by ``kmock.Server`` on
  127.0.0.1 in its own thread and event loop, a kubeconfig file pointing at it, and a
  ``kubernetes`` client (its own configuration, never the process-wide default) for the
  test's requests, exactly as ``kubectl`` would make them.
* :class:`OperatorThread` — the operator's real entry point
  (:func:`ematix_flow_operator.run`) with kopf in its own thread and event loop, started
  and stopped with kopf's ``ready_flag``/``stop_flag``.
* :func:`wait_for` — poll a condition until it holds or a timeout says what was last seen.
* :func:`cluster_fixtures` — the ``cluster``, ``operator_thread`` and ``ns`` fixtures, for
  the conftest of every suite that runs against the emulated cluster.

Code in the emulator's loop only awaits; the test's blocking calls go over HTTP from the
main thread, so neither loop can deadlock the other.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kmock
import kopf
import kubernetes.client
import kubernetes.config
import pytest
import yaml
from ematix_flow_operator import Operator, OperatorConfig, build_registry, run
from kube_emulator import Call, StrictEmulator

from ematix_flow._k8s.model import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from ematix_flow._k8s.summary import build_summary, encode_summary

__all__ = [
    "RESOURCE",
    "Cluster",
    "OperatorThread",
    "cluster_fixtures",
    "conditions",
    "container_of",
    "fast_settings",
    "finish_run",
    "ready",
    "spec",
    "start_run",
    "summary",
    "wait_for",
]

T = TypeVar("T")
RESOURCE = f"{GROUP}/{VERSION}/{PLURAL}"


def wait_for(probe: Callable[[], T | None], *, timeout: float = 15.0, what: str = "condition") -> T:
    """Call ``probe`` until it returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(0.05)


class Cluster:
    """The emulated Kubernetes API, its kubeconfig, and clients for the test."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="k8s-api", daemon=True)
        self.emulator: StrictEmulator
        self._server: kmock.Server
        self.url = ""
        self.kubeconfig = workdir / "kubeconfig"

    def __enter__(self) -> Cluster:
        self._thread.start()
        self._call(self._start())
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": "test-token"}}],
                    "contexts": [
                        {
                            "name": "emulator",
                            "context": {"cluster": "emulator", "user": "tester"},
                        }
                    ],
                    "current-context": "emulator",
                }
            )
        )
        self.api = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.batch = kubernetes.client.BatchV1Api(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        return self

    def __exit__(self, *exc: object) -> None:
        self.api.close()
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self.emulator = StrictEmulator()
        self.emulator.resources.load_bundled()
        self.emulator.resources[RESOURCE] = kmock.ResourceInfo(
            kind=KIND,
            singular=SINGULAR,
            namespaced=True,
            shortnames=set(SHORT_NAMES),
            verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
            subresources={"status"},
        )
        await self.emulator.__aenter__()
        self._server = kmock.Server(self.emulator)
        await self._server.__aenter__()
        self.url = str(self._server.url).rstrip("/")

    async def _stop(self) -> None:
        await self._server.__aexit__(None, None, None)
        await self.emulator.__aexit__(None, None, None)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def _in_loop(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self._call(call())

    # --- reading the stored state (in the emulator's loop, never concurrently) ----------

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._in_loop(lambda: self.emulator.get(resource, namespace, name))

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return self._in_loop(lambda: self.emulator.list(resource, namespace))

    def drop_watches(self) -> int:
        return self._in_loop(self.emulator.drop_watches)

    def calls(self) -> list[Call]:
        """Every request the emulated API has served so far."""
        return self._in_loop(lambda: list(self.emulator.calls))

    def add_namespace(self, name: str) -> None:
        """Make ``name`` exist (objects created in a new namespace also add it)."""
        self._in_loop(lambda: self.emulator.namespaces.add(name))

    def fail_next(self, method: str, path: str, *, status: int = 500, times: int = 1) -> None:
        self._in_loop(lambda: self.emulator.fail_next(method, path, status=status, times=times))

    def requests(self, method: str, path_part: str) -> int:
        """How many requests with ``method`` and ``path_part`` in the path were served."""
        return self._in_loop(
            lambda: sum(
                1
                for verb, path, _, _ in self.emulator.calls
                if verb == method.upper() and path_part in path
            )
        )

    def watch_selectors(self, plural: str) -> set[str | None]:
        """The label selectors of every watch request made on ``plural``."""

        def collect() -> set[str | None]:
            found: set[str | None] = set()
            for verb, path, query, _ in self.emulator.calls:
                params = urllib.parse.parse_qs(query)
                if verb == "GET" and path.endswith(f"/{plural}") and "watch" in params:
                    found.add(params.get("labelSelector", [None])[0])
            return found

        return self._in_loop(collect)

    def watches(self, plural: str) -> int:
        """How many watch requests on ``plural`` have been made so far."""
        return self._in_loop(
            lambda: sum(
                1
                for verb, path, query, _ in self.emulator.calls
                if verb == "GET" and path.endswith(f"/{plural}") and "watch=true" in query
            )
        )

    # --- the test's API calls (as a user with kubectl would) ----------------------------

    def create_pipeline(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def patch_pipeline(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"spec": spec},
            _content_type="application/merge-patch+json",
        )

    def pipeline(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(RESOURCE, namespace, name)

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        body = self.pipeline(namespace, name) or {}
        return body.get("status") or {}

    def cronjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get("batch/v1/cronjobs", namespace, name)

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.list("v1/events", namespace)
            if (e.get("involvedObject") or {}).get("name") == name
        ]


def fast_settings(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kopf settings for tests: short watch cycles, short backoffs, quiet logs."""
    settings.watching.server_timeout = 10
    settings.watching.client_timeout = 15
    settings.watching.connect_timeout = 2
    settings.watching.reconnect_backoff = 0.05
    settings.networking.error_backoffs = [0.1, 0.2, 0.5]
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 0.5
    settings.queueing.error_delays = [0.1, 0.2, 0.5, 1.0]
    settings.posting.default_backoffs = [0.1, 0.2, 0.5]
    settings.persistence.consistency_timeout = 1.0


class OperatorThread:
    """The real operator (``ematix_flow_operator.run``) in a thread of its own."""

    def __init__(self, cluster: Cluster, **config: Any) -> None:
        config.setdefault("all_namespaces", not config.get("namespaces"))
        config.setdefault("recheck_interval", 5.0)
        config.setdefault("retry_delay", 0.3)
        config.setdefault("liveness_endpoint", None)
        # The metrics endpoint on a free loopback port: ``.operator.metrics.url`` after start.
        config.setdefault("metrics_endpoint", "http://127.0.0.1:0/metrics")
        self.config = OperatorConfig(kubeconfig=str(cluster.kubeconfig), **config)
        self.cluster = cluster
        #: The running operator's state (its metrics among it); new at each start.
        self.operator: Operator | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def _main(self) -> None:
        assert self.operator is not None
        registry = build_registry(self.config, operator=self.operator)
        kopf.on.startup(registry=registry, id="test-settings")(fast_settings)
        try:
            asyncio.run(
                run(self.config, registry=registry, stop_flag=self._stop, ready_flag=self._ready)
            )
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> OperatorThread:
        """Start and return once the operator watches EmatixPipelines."""
        self._stop.clear()
        self._ready.clear()
        self.operator = Operator(self.config)
        watches = self.cluster.watches(PLURAL)
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)
        self._thread.start()
        try:
            if not self._ready.wait(20):
                raise AssertionError(f"the operator did not start: {self.error!r}")
            wait_for(
                lambda: self.error is not None or self.cluster.watches(PLURAL) > watches,
                timeout=20,
                what="the operator's watch on EmatixPipelines",
            )
        except BaseException:
            self.stop()
            raise
        if self.error is not None:
            raise AssertionError(f"the operator crashed: {self.error!r}") from self.error
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(20)
            assert not self._thread.is_alive(), "the operator did not stop"
        if self.error is not None:
            raise AssertionError(f"the operator crashed: {self.error!r}") from self.error

    def restart(self) -> None:
        self.stop()
        self.start()


# --- resources and runs as the tests write them ----------------------------------------

SCHEDULED = "batch.kubernetes.io/cronjob-scheduled-timestamp"


def cluster_fixtures(*, folder: str, namespace_prefix: str) -> tuple[Any, Any, Any]:
    """The fixtures of a suite run against the emulated cluster, for its conftest::

        cluster, operator_thread, ns = cluster_fixtures(folder="k8s", namespace_prefix="t-")

    ``cluster`` (in a temporary folder named after ``folder``) and ``operator_thread``
    live one per test module; ``ns`` is a fresh namespace per test (its name starts with
    ``namespace_prefix``), so tests share the cluster and the running operator without
    seeing each other's objects.
    """

    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
        with Cluster(tmp_path_factory.mktemp(folder)) as running:
            yield running

    @pytest.fixture(scope="module")
    def operator_thread(cluster: Cluster) -> Iterator[OperatorThread]:
        runner = OperatorThread(cluster).start()
        try:
            yield runner
        finally:
            runner.stop()

    @pytest.fixture
    def ns(cluster: Cluster) -> Iterator[str]:
        """A fresh namespace; its EmatixPipelines (and by GC their CronJobs) deleted after."""
        name = f"{namespace_prefix}{uuid.uuid4().hex[:8]}"
        yield name
        for body in cluster.list(RESOURCE, name):
            cluster.custom.delete_namespaced_custom_object(
                GROUP, VERSION, name, PLURAL, body["metadata"]["name"]
            )

    return cluster, operator_thread, ns


def spec(**overrides: object) -> dict[str, Any]:
    base: dict[str, Any] = {
        "pipeline": "customer_sync",
        "module": "my_pipelines",
        "image": "registry.example/pipelines:1.0",
        "schedule": "0 */6 * * *",
        "connections": [
            {"name": "oltp", "secretName": "oltp-dsn"},
            {"name": "warehouse", "secretName": "warehouse-dsn", "key": "url"},
        ],
    }
    base.update(overrides)
    return base


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or ()}


def ready(cluster: Cluster, ns: str, name: str, value: str = "True") -> dict[str, Any]:
    """Wait until the resource's Ready condition is ``value``; its status."""

    def probe() -> dict[str, Any] | None:
        status = cluster.status(ns, name)
        return status if conditions(status).get("Ready", {}).get("status") == value else None

    return wait_for(probe, what=f"Ready={value} on {ns}/{name}")


def container_of(cronjob: dict[str, Any]) -> dict[str, Any]:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]


def start_run(cluster: Cluster, ns: str, cronjob_name: str, job: str, *, at: str) -> None:
    """Create a Job and its Pod from the CronJob's template, as the controllers would."""
    cj = cluster.cronjob(ns, cronjob_name)
    assert cj is not None
    template = cj["spec"]["jobTemplate"]
    cluster.batch.create_namespaced_job(
        ns,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": job,
                "labels": template["metadata"]["labels"],
                "annotations": {SCHEDULED: at},
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "CronJob",
                        "name": cronjob_name,
                        "uid": cj["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": template["spec"],
        },
    )
    cluster.batch.patch_namespaced_job_status(
        job,
        ns,
        {"status": {"startTime": at, "active": 1}},
        _content_type="application/merge-patch+json",
    )
    job_uid = cluster.get("batch/v1/jobs", ns, job)["metadata"]["uid"]
    pod_template = template["spec"]["template"]
    cluster.core.create_namespaced_pod(
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{job}-x7k2p",
                "labels": {
                    **pod_template["metadata"]["labels"],
                    "batch.kubernetes.io/job-name": job,
                },
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job,
                        "uid": job_uid,
                        "controller": True,
                    }
                ],
            },
            "spec": pod_template["spec"],
        },
    )


def finish_run(
    cluster: Cluster, ns: str, job: str, *, exit_code: int, message: str, at: str
) -> None:
    """The pod terminates with ``message``, then the Job completes or fails."""
    cluster.core.patch_namespaced_pod_status(
        f"{job}-x7k2p",
        ns,
        {
            "status": {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "name": "flow",
                        "image": "registry.example/pipelines:1.0",
                        "imageID": "registry.example/pipelines@sha256:0123",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": exit_code,
                                "reason": "Completed" if exit_code == 0 else "Error",
                                "message": message,
                                "finishedAt": at,
                            }
                        },
                    }
                ],
            }
        },
        _content_type="application/merge-patch+json",
    )
    if exit_code == 0:
        job_status = {
            "active": None,
            "succeeded": 1,
            "completionTime": at,
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": at}],
        }
    else:
        job_status = {
            "active": None,
            "failed": 1,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastTransitionTime": at,
                }
            ],
        }
    cluster.batch.patch_namespaced_job_status(
        job, ns, {"status": job_status}, _content_type="application/merge-patch+json"
    )


def summary(*targets: dict[str, Any], ok: bool) -> str:
    return encode_summary(
        build_summary(
            {"pipeline": "customer_sync", "action": "run", "ok": ok, "results": list(targets)}
        )
    )
