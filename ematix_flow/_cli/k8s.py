"""``flow export-k8s`` — the scheduled pipelines of a module as EmatixPipeline resources.

::

    flow export-k8s --module my_pipelines --image registry.example/pipelines:1.4 --output -
    flow export-k8s --module my_pipelines --image … --namespace data --output k8s/

Parses, imports the module (which registers its pipelines), calls
:func:`ematix_flow._k8s.export.export_pipelines` and renders: the YAML (on stdout with
``--output -``, else one file per pipeline in the directory) and the list of Secrets to
create — on stderr when stdout carries the YAML, so ``| kubectl apply -f -`` stays
clean. No connection is resolved and no secret value is read.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ematix_flow._cli._loader import load_module
from ematix_flow._cli._output import console, fail
from ematix_flow._cli.run import ModuleOption
from ematix_flow._exitcodes import ExitCode

if TYPE_CHECKING:
    from ematix_flow._k8s.export import Export

__all__ = ["export_k8s"]

_DEFAULT_TEMPLATE = "ematix-flow-{connection}"


def _registered(module: str) -> tuple[str, list[object]]:
    """Import ``module`` exactly as ``flow run --module`` does: its import name (what the
    pods are given as ``--module``, also for ``--module path/to/file.py``) and its
    registered pipelines."""
    from ematix_flow import pipeline

    name = load_module(module)
    return name, list(pipeline.registry().values())


def _secrets_report(export: Export, *, stderr: bool) -> None:
    from rich.text import Text

    out = console(stderr=stderr)
    where = f" -n {export.namespace}" if export.namespace else ""
    if export.skipped:
        out.print(
            Text(f"Skipped (no schedule, nothing to run on a CronJob): {', '.join(export.skipped)}")
        )
    if not export.secrets:
        out.print(Text("The pipelines use no named connection: no Secret to create."))
        return
    out.print(Text("Create these Secrets (one DSN each; values never appear in the export):"))
    for secret in export.secrets:
        users = ", ".join(secret.pipelines)
        out.print(
            Text(
                f"  {secret.name}  key {secret.key}  ← connection {secret.connection!r} "
                f"(used by {users})"
            )
        )
    first = export.secrets[0]
    out.print(Text("For example:"))
    out.print(
        Text(
            f"  kubectl{where} create secret generic {first.name} "
            f"--from-literal={first.key}='postgresql://USER:PASSWORD@HOST:5432/DBNAME'"
        )
    )


def export_k8s(
    module: ModuleOption,
    image: Annotated[
        str,
        typer.Option(help="Container image of the pipeline pods (holds flow and the module)."),
    ],
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", help="Namespace written into each resource (default: none)."),
    ] = None,
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Directory for one <resource-name>.yaml per scheduled pipeline (its name in "
            "DNS form: customer-sync.yaml), or - for one YAML stream on stdout.",
        ),
    ] = "-",
    secret_name_template: Annotated[
        str,
        typer.Option(
            help="Secret name per connection; {connection} is the connection name in DNS "
            "form (lower case, '_' → '-').",
        ),
    ] = _DEFAULT_TEMPLATE,
    job: Annotated[
        str | None,
        typer.Option(
            "--job",
            metavar="'COMMAND NAME [OPTIONS]'",
            help="Instead: one Job running this flow command in the pipeline's pod, e.g. "
            "--job 'backfill orders_sync --from 2026-01-01 --to 2026-01-08' or "
            "--job 'run orders_sync --full-refresh'; printed on stdout.",
        ),
    ] = None,
) -> None:
    """Write the scheduled pipelines of a module as EmatixPipeline resources.

    Example: flow export-k8s -m pipes --image registry.example/pipes:1.4 -o k8s/
    """
    from ematix_flow._k8s.export import export_pipelines, write_directory

    module, registered = _registered(module)
    export = export_pipelines(
        registered,
        module=module,
        image=image,
        namespace=namespace,
        secret_name_template=secret_name_template,
    )
    if job is not None:
        _write_job(export, job, namespace)
        return
    if not export.resources:
        skipped = f" (without a schedule: {', '.join(export.skipped)})" if export.skipped else ""
        raise fail(
            f"module {module!r} registers no scheduled pipeline{skipped}; give a pipeline a "
            'schedule, e.g. @ematix.pipeline(..., schedule="0 * * * *")',
            ExitCode.CONFIG_ERROR,
        )
    if output == "-":
        sys.stdout.write(export.yaml())
        sys.stdout.flush()
        _secrets_report(export, stderr=True)
        return
    result = write_directory(export, Path(output))
    out = console()
    from rich.text import Text

    for name in result.written:
        out.print(Text(f"wrote {Path(output) / name}"))
    for name in result.unchanged:
        out.print(Text(f"unchanged {Path(output) / name}"))
    for name in result.removed:
        out.print(Text(f"removed {Path(output) / name} (its pipeline is gone)"))
    _secrets_report(export, stderr=False)


def _write_job(export: Export, job: str, namespace: str | None) -> None:
    """``--job``: the one-off Job of a state action, for the pipeline the command names."""
    import shlex

    from ematix_flow._k8s.cronjob import render_job
    from ematix_flow._k8s.export import _dump

    args = shlex.split(job)
    words = [a for a in args if not a.startswith("-")]
    for resource in export.resources:
        if resource.spec.pipeline in words[1:3]:
            doc = render_job(resource.metadata.name, namespace, resource.spec, args)
            sys.stdout.write(_dump(doc))
            sys.stdout.flush()
            return
    names = ", ".join(r.spec.pipeline for r in export.resources) or "none"
    raise fail(
        f"--job {job!r} names no scheduled pipeline of module {export.module!r} "
        f"(scheduled: {names}); e.g. --job 'run NAME --full-refresh'",
        ExitCode.USAGE,
    )
