"""The ``ematix-flow-operator`` command (what the Helm chart's Deployment runs).

::

    ematix-flow-operator --all-namespaces --log-format json
    ematix-flow-operator -n data -n analytics --liveness http://0.0.0.0:8080/healthz
    ematix-flow-operator -A --metrics http://0.0.0.0:9090/metrics   # 'off' disables it

Exit codes follow :mod:`ematix_flow._exitcodes`: a wrong command line or scope is a
configuration error (3); the operator itself runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from ematix_flow._errors import ConfigurationError
from ematix_flow._exitcodes import CONFIG_ERROR
from ematix_flow_operator.config import DEFAULT_LIVENESS, DEFAULT_METRICS, OperatorConfig

__all__ = ["app", "main"]

app = typer.Typer(name="ematix-flow-operator", add_completion=False)
_OFF = {"off", "none", ""}


@app.command(help="Reconcile EmatixPipeline resources into CronJobs and report their runs.")
def operate(
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Namespace to watch (repeatable; kopf globs such as 'team-*' allowed).",
            envvar="EMATIX_FLOW_OPERATOR_NAMESPACES",
        ),
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Watch every namespace.")
    ] = False,
    default_image: Annotated[
        str | None,
        typer.Option(
            help="Image of pipeline pods whose EmatixPipeline names no spec.image.",
            envvar="EMATIX_FLOW_OPERATOR_DEFAULT_IMAGE",
        ),
    ] = None,
    kubeconfig: Annotated[
        str | None,
        typer.Option(help="kubeconfig file (default: in-cluster, else ~/.kube/config)."),
    ] = None,
    liveness: Annotated[
        str, typer.Option(help="Health endpoint URL for probes; 'off' disables it.")
    ] = DEFAULT_LIVENESS,
    metrics: Annotated[
        str,
        typer.Option(
            help="Prometheus metrics endpoint URL to listen on; 'off' disables it.",
            envvar="EMATIX_FLOW_OPERATOR_METRICS",
        ),
    ] = DEFAULT_METRICS,
    log_format: Annotated[
        str, typer.Option(help="full (timestamped text), plain or json (one object a line).")
    ] = "full",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="More logging.")] = False,
    debug: Annotated[bool, typer.Option(help="Debug logging, kopf internals included.")] = False,
    recheck_interval: Annotated[
        float, typer.Option(help="Seconds between periodic re-checks of each resource.")
    ] = 60.0,
    peering: Annotated[
        str | None,
        typer.Option(
            help="kopf peering name for leader election between replicas (needs kopf's "
            "peering CRDs); default: standalone, for a single replica."
        ),
    ] = None,
    priority: Annotated[int, typer.Option(help="Peering priority of this replica.")] = 0,
) -> None:
    import kopf

    from ematix_flow_operator.runner import run

    namespaces = tuple(n for item in namespace or () for n in item.split(",") if n.strip())
    try:
        config = OperatorConfig(
            namespaces=tuple(n.strip() for n in namespaces),
            all_namespaces=all_namespaces,
            default_image=default_image or None,
            kubeconfig=kubeconfig,
            liveness_endpoint=None if liveness.lower() in _OFF else liveness,
            metrics_endpoint=None if metrics.lower() in _OFF else metrics,
            log_format=log_format,  # type: ignore[arg-type]  # checked by the config
            verbose=verbose,
            debug=debug,
            recheck_interval=recheck_interval,
            peering=peering,
            priority=priority,
        )
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(int(CONFIG_ERROR)) from None
    kopf.configure(
        verbose=verbose,
        debug=debug,
        log_format=kopf.LogFormat[config.log_format.upper()],
        log_refkey="k8s",
    )
    asyncio.run(run(config))


def main() -> None:
    """Console-script entry point."""
    app()
