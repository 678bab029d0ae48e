"""How one operator process runs: what it watches, how often it re-checks, how it logs.

Built by the command line (:mod:`~ematix_flow_operator.cli`) or directly by tests::

    OperatorConfig(namespaces=("data",), recheck_interval=60)
    OperatorConfig(all_namespaces=True, log_format="json")
    OperatorConfig(all_namespaces=True, metrics_endpoint="http://0.0.0.0:9090/metrics")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from ematix_flow._errors import ConfigurationError

__all__ = ["DEFAULT_LIVENESS", "DEFAULT_METRICS", "OperatorConfig", "parse_endpoint"]

#: kopf's health endpoint; the chart's liveness and readiness probes call it.
DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
#: The Prometheus endpoint (:mod:`~ematix_flow_operator.metrics`); the chart's Service
#: and ServiceMonitor point at it.
DEFAULT_METRICS = "http://0.0.0.0:9090/metrics"


def parse_endpoint(url: str) -> tuple[str, int, str]:
    """``(host, port, path)`` of an ``http://HOST:PORT/PATH`` endpoint to listen on.

    >>> parse_endpoint("http://0.0.0.0:9090/metrics")
    ('0.0.0.0', 9090, '/metrics')
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None or parts.username:
        raise ConfigurationError(
            f"endpoint {url!r} is not an http://HOST:PORT/PATH address to listen on, such "
            f"as {DEFAULT_METRICS!r}"
        )
    return parts.hostname, port, parts.path or "/"


@dataclass(frozen=True, kw_only=True)
class OperatorConfig:
    """Options of one operator process (frozen; see the module docstring)."""

    #: Namespaces to watch (exact names or kopf globs such as ``team-*``).
    namespaces: tuple[str, ...] = ()
    #: Watch every namespace (needs cluster-wide RBAC). Exclusive with ``namespaces``.
    all_namespaces: bool = False
    #: Seconds between re-checks of each resource's CronJob and latest run (a CronJob
    #: deleted while the operator was not watching is restored at the latest then).
    recheck_interval: float = 60.0
    #: Seconds before a handler that hit a transient API error (409, 5xx) runs again.
    retry_delay: float = 10.0
    #: Image of pipeline pods whose resource names none (chart value pipelineImage).
    default_image: str | None = None
    #: Explicit kubeconfig file; default: in-cluster service account, else ~/.kube/config.
    kubeconfig: str | None = None
    #: kopf's liveness endpoint (``None`` disables it).
    liveness_endpoint: str | None = DEFAULT_LIVENESS
    #: The Prometheus endpoint (``None`` disables it).
    metrics_endpoint: str | None = DEFAULT_METRICS
    #: ``full`` (timestamped text), ``plain`` (messages only) or ``json`` (one object a line).
    log_format: Literal["full", "plain", "json"] = "full"
    verbose: bool = False
    debug: bool = False
    #: kopf peering name for leader election between replicas (needs kopf's peering
    #: CRDs); ``None`` runs standalone, which is what one replica needs.
    peering: str | None = None
    #: Peering priority of this replica (the highest one runs, the others wait).
    priority: int = 0

    def __post_init__(self) -> None:
        if bool(self.namespaces) == bool(self.all_namespaces):
            raise ConfigurationError(
                "the operator needs its scope: pass --namespace NAME (repeatable) to watch "
                "some namespaces, or --all-namespaces to watch them all — exactly one of them"
            )
        if self.recheck_interval <= 0 or self.retry_delay <= 0:
            raise ConfigurationError(
                "--recheck-interval and the retry delay must be positive numbers of seconds"
            )
        if self.metrics_endpoint is not None:
            parse_endpoint(self.metrics_endpoint)
        if self.log_format not in {"full", "plain", "json"}:
            raise ConfigurationError(
                f"unknown log format {self.log_format!r}: use full, plain or json"
            )
