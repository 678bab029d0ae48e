"""The few Kubernetes API calls the operator makes, on plain dicts.

One :class:`Kube` per operator process, built at login from an explicit
``kubernetes.client.Configuration`` (the process-wide default is never touched, so
tests can run several clients side by side). Every call returns the JSON the server
sent as a dict (``None`` for 404 on reads) and raises only the operator's own errors
(:func:`~ematix_flow_operator.errors.classify_api_error`): the handlers never see a
``kubernetes`` exception.

Patches are JSON merge patches (``application/merge-patch+json``): the client's default
for a dict body would be a JSON patch, which the API server rejects.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import kopf
import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException

from ematix_flow._k8s.model import GROUP, PLURAL, VERSION
from ematix_flow_operator.errors import TransientApiError, classify_api_error

__all__ = ["USER_AGENT", "Kube", "connection_info", "load_configuration"]

MERGE_PATCH = "application/merge-patch+json"


def _version() -> str:
    try:
        return importlib.metadata.version("ematix-flow")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0"


USER_AGENT = f"ematix-flow-operator/{_version()}"
T = TypeVar("T")


def load_configuration(kubeconfig: str | None) -> kubernetes.client.Configuration:
    """Client configuration from ``kubeconfig``, else in-cluster, else ``~/.kube/config``."""
    config = kubernetes.client.Configuration()
    if kubeconfig:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=config)
        return config
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)
    except kubernetes.config.ConfigException:
        try:
            kubernetes.config.load_kube_config(client_configuration=config)
        except kubernetes.config.ConfigException as exc:
            raise kopf.LoginError(
                "no Kubernetes credentials: not in a cluster and no kubeconfig found; "
                "pass --kubeconfig or set KUBECONFIG"
            ) from exc
    return config


def connection_info(config: kubernetes.client.Configuration) -> kopf.ConnectionInfo:
    """kopf's credentials from the same configuration (as ``kopf.login_via_client``)."""
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (
        (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else tuple(parts)
    )
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        username=config.username or None,
        password=config.password or None,
        scheme=scheme,
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
    )


def _json(response: Any) -> dict[str, Any]:
    return json.loads(response.data or b"{}")


class Kube:
    """Typed-by-purpose access to the objects the operator reads and writes."""

    def __init__(
        self,
        config: kubernetes.client.Configuration,
        *,
        on_transient: Callable[[TransientApiError], None] | None = None,
    ) -> None:
        #: Told of every transient failure (the operator counts API retries with it).
        self.on_transient = on_transient
        self.client = kubernetes.client.ApiClient(config)
        self.client.user_agent = USER_AGENT  # tells our calls apart in audit logs
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.batch = kubernetes.client.BatchV1Api(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)

    def close(self) -> None:
        self.client.close()

    def _call(self, doing: str, fn: Callable[[], T], *, missing_ok: bool = False) -> T | None:
        try:
            return fn()
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            raise self._classified(exc, doing) from exc
        except Exception as exc:  # urllib3 transport errors: refused, reset, timed out
            if isinstance(exc, TransientApiError):
                raise
            if type(exc).__module__.startswith(("urllib3", "http.client", "socket", "ssl")):
                raise self._classified(exc, doing) from exc
            if isinstance(exc, ConnectionError | TimeoutError):
                raise self._classified(exc, doing) from exc
            raise

    def _classified(self, exc: BaseException, doing: str) -> Exception:
        error = classify_api_error(exc, doing=doing)
        if isinstance(error, TransientApiError) and self.on_transient is not None:
            self.on_transient(error)
        return error

    # --- EmatixPipeline -----------------------------------------------------------------

    def get_pipeline(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call(
            f"reading EmatixPipeline {namespace}/{name}",
            lambda: _json(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _preload_content=False
                )
            ),
            missing_ok=True,
        )

    def patch_pipeline_status(
        self, namespace: str, name: str, status_patch: dict[str, Any], *, resource_version: str
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource, only if the object is still at
        ``resource_version`` (else a 409, which is transient)."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status_patch}
        return self._call(
            f"writing the status of EmatixPipeline {namespace}/{name}",
            lambda: _json(
                self.custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    body,
                    _content_type=MERGE_PATCH,
                    _preload_content=False,
                )
            ),
            missing_ok=True,
        )

    def post_event(
        self, body: Mapping[str, Any], *, type: str, reason: str, message: str, now: str
    ) -> None:
        """Record a core/v1 Event about ``body`` (what ``kubectl describe`` shows)."""
        meta = body.get("metadata") or {}
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{meta.get('name')}.",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "ematix-flow-operator"},
            "reportingComponent": "ematix-flow-operator",
            "reportingInstance": "ematix-flow-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._call(
            f"recording an Event for {meta.get('namespace')}/{meta.get('name')}",
            lambda: self.core.create_namespaced_event(
                meta.get("namespace"), event, _preload_content=False
            ),
        )

    # --- CronJobs, Jobs, Pods -----------------------------------------------------------

    def get_cronjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call(
            f"reading CronJob {namespace}/{name}",
            lambda: _json(
                self.batch.read_namespaced_cron_job(name, namespace, _preload_content=False)
            ),
            missing_ok=True,
        )

    def create_cronjob(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        result = self._call(
            f"creating CronJob {meta['namespace']}/{meta['name']}",
            lambda: _json(
                self.batch.create_namespaced_cron_job(
                    meta["namespace"], manifest, _preload_content=False
                )
            ),
        )
        assert result is not None  # not missing_ok: a failure raised
        return result

    def replace_cronjob(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Replace (PUT) the CronJob; ``metadata.resourceVersion`` guards against races."""
        meta = manifest["metadata"]
        return self._call(
            f"updating CronJob {meta['namespace']}/{meta['name']}",
            lambda: _json(
                self.batch.replace_namespaced_cron_job(
                    meta["name"], meta["namespace"], manifest, _preload_content=False
                )
            ),
            missing_ok=True,
        )

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call(
            f"reading Job {namespace}/{name}",
            lambda: _json(self.batch.read_namespaced_job(name, namespace, _preload_content=False)),
            missing_ok=True,
        )

    def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = self._call(
            f"listing Jobs in {namespace}",
            lambda: _json(
                self.batch.list_namespaced_job(
                    namespace, label_selector=selector, _preload_content=False
                )
            ),
        )
        return list((result or {}).get("items") or [])

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = self._call(
            f"listing Pods in {namespace}",
            lambda: _json(
                self.core.list_namespaced_pod(
                    namespace, label_selector=selector, _preload_content=False
                )
            ),
        )
        return list((result or {}).get("items") or [])
