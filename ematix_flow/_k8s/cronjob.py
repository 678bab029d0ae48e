"""Render an ``EmatixPipeline`` into the CronJob that runs it: a pure function.

The operator calls :func:`render_cronjob` on every create/update of a resource and
applies the result; nothing here talks to a cluster, so the whole manifest is
unit-tested and validated against the official Kubernetes schemas::

    from ematix_flow._k8s.cronjob import render_cronjob

    cronjob = render_cronjob("customer-sync", "data", body["metadata"]["uid"], body["spec"])
    cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    # ['flow', 'run', 'customer_sync', '--module', 'my_pipelines']

What the manifest guarantees:

* it is owned by the resource (``ownerReferences`` with ``controller: true``), so
  deleting the resource garbage-collects the CronJob and its Jobs;
* labels ``app.kubernetes.io/*`` and ``ematix.io/pipeline`` on the CronJob, its Jobs and
  their pods (the operator finds a resource's pods by :func:`selector_labels`);
* each connection becomes ``EMATIX_FLOW_DSN_<NAME>`` read from its Secret key — the
  same name the connection registry reads (:func:`ematix_flow.config.env_var_name`);
* the pod runs as in Kubernetes' *restricted* Pod Security Standard, with a read-only
  root file system and a writable ``/tmp``;
* ``flow run`` writes its run summary to ``/dev/termination-log``
  (:mod:`ematix_flow._k8s.summary`), and a configuration error (exit code
  :data:`~ematix_flow._exitcodes.CONFIG_ERROR`) or usage error fails the Job at once
  instead of retrying.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ematix_flow._errors import ConfigurationError
from ematix_flow._exitcodes import CONFIG_ERROR, USAGE
from ematix_flow._k8s import model
from ematix_flow._k8s.summary import TERMINATION_MESSAGE_ENV, TERMINATION_MESSAGE_PATH
from ematix_flow.config import env_var_name

__all__ = [
    "CONTAINER_NAME",
    "FAIL_FAST_EXIT_CODES",
    "LABEL_PIPELINE",
    "MAX_CRONJOB_NAME",
    "cronjob_labels",
    "cronjob_name",
    "dsn_env_name",
    "label_value",
    "render_cronjob",
    "selector_labels",
]

#: Name of the container that runs ``flow``.
CONTAINER_NAME = "flow"
#: Label carrying the pipeline name on the CronJob, its Jobs and pods.
LABEL_PIPELINE = "ematix.io/pipeline"
#: The Job controller appends 11 characters to a CronJob's name; Job names are ≤ 63.
MAX_CRONJOB_NAME = 52
#: Exit codes after which retrying cannot help: the Job fails at once.
FAIL_FAST_EXIT_CODES = (int(USAGE), int(CONFIG_ERROR))

_TMP_VOLUME = "tmp"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _shorten(text: str, limit: int) -> str:
    """``text`` itself when it fits, else a prefix plus a stable hash (still unique)."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: limit - 9].rstrip('-_.')}-{digest}"


def label_value(text: str) -> str:
    """``text`` as a valid label value (≤ 63 chars, shortened with a stable hash).

    >>> label_value("customer_sync")
    'customer_sync'
    """
    value = _shorten(text, 63)
    if not _LABEL_VALUE.match(value):
        value = re.sub(r"[^-A-Za-z0-9_.]", "-", value).strip("-_.")
    return value


def cronjob_name(name: str) -> str:
    """The CronJob's name for the resource ``name``: the same, shortened past 52 chars.

    >>> cronjob_name("customer-sync")
    'customer-sync'
    """
    return _shorten(name, MAX_CRONJOB_NAME).rstrip("-.")


def dsn_env_name(connection: str) -> str:
    """The variable the pod reads a connection's DSN from (the registry's own rule).

    >>> dsn_env_name("alt-warehouse")
    'EMATIX_FLOW_DSN_ALT_WAREHOUSE'
    """
    return env_var_name(connection)


def selector_labels(name: str) -> dict[str, str]:
    """Labels that select the CronJob, Jobs and pods of the resource ``name``."""
    return {
        "app.kubernetes.io/name": "ematix-flow",
        "app.kubernetes.io/instance": label_value(name),
    }


def cronjob_labels(name: str, pipeline: str) -> dict[str, str]:
    """Every label put on the CronJob, its Jobs and their pods."""
    return {
        **selector_labels(name),
        "app.kubernetes.io/component": "pipeline",
        "app.kubernetes.io/part-of": "ematix-flow",
        "app.kubernetes.io/managed-by": "ematix-flow-operator",
        LABEL_PIPELINE: label_value(pipeline),
    }


def _env(spec: model.EmatixPipelineSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {
            "name": dsn_env_name(conn.name),
            "valueFrom": {"secretKeyRef": {"name": conn.secret_name, "key": conn.key}},
        }
        for conn in spec.connections
    ]
    env += [
        {"name": TERMINATION_MESSAGE_ENV, "value": TERMINATION_MESSAGE_PATH},
        # The root file system is read-only: anything that wants a home writes to /tmp.
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    env += [extra.to_k8s() for extra in spec.env or ()]
    return env


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container(spec: model.EmatixPipelineSpec, image: str) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["flow", "run", spec.pipeline, "--module", spec.module],
        "env": _env(spec),
        "securityContext": _security_context(),
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        # A crash before the summary is written (e.g. an import error) still leaves
        # the tail of the log as the termination message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": _TMP_VOLUME, "mountPath": "/tmp"}],
    }
    if spec.resources is not None:
        container["resources"] = spec.resources.to_k8s()
    return container


def _pod_spec(spec: model.EmatixPipelineSpec, image: str) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(spec, image)],
        "volumes": [{"name": _TMP_VOLUME, "emptyDir": {}}],
    }
    if spec.service_account_name is not None:
        pod["serviceAccountName"] = spec.service_account_name
    else:
        # A pipeline never talks to the Kubernetes API: no token in its pods.
        pod["automountServiceAccountToken"] = False
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [t.to_k8s() for t in spec.tolerations]
    return pod


def _pod_failure_policy() -> dict[str, Any]:
    return {
        "rules": [
            {
                # Bad configuration or command line: the next retry fails the same way.
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": list(FAIL_FAST_EXIT_CODES),
                },
            },
            {
                # An evicted or preempted pod is not the pipeline's failure.
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
        ]
    }


def render_cronjob(
    name: str,
    namespace: str,
    uid: str,
    spec: model.EmatixPipelineSpec | Mapping[str, Any],
    *,
    default_image: str | None = None,
) -> dict[str, Any]:
    """The ``batch/v1`` CronJob for the EmatixPipeline ``namespace/name``.

    ``uid`` is the resource's ``metadata.uid`` (for the owner reference). ``spec`` is
    the parsed model or the resource's camelCase ``spec`` dict; a dict that does not
    fit the model raises :class:`pydantic.ValidationError` (a bad spec: retrying will
    not help). ``default_image`` is used when the spec names no image (the operator's
    ``EMATIX_FLOW_OPERATOR_DEFAULT_IMAGE``); with neither,
    :class:`~ematix_flow._errors.ConfigurationError` is raised. The result is a plain,
    JSON-ready dict; the same input gives the same output.
    """
    if not isinstance(spec, model.EmatixPipelineSpec):
        spec = model.EmatixPipelineSpec.from_k8s(dict(spec))
    image = spec.image or default_image
    if not image:
        raise ConfigurationError(
            f"EmatixPipeline {namespace}/{name} names no image and the operator has no "
            "default pipeline image: set spec.image, or the chart value pipelineImage"
        )
    labels = cronjob_labels(name, spec.pipeline)
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "podFailurePolicy": _pod_failure_policy(),
        "template": {"metadata": {"labels": dict(labels)}, "spec": _pod_spec(spec, image)},
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    cron_spec: dict[str, Any] = {
        "schedule": spec.schedule,
        "suspend": spec.suspend,
        "concurrencyPolicy": spec.concurrency_policy,
        "successfulJobsHistoryLimit": spec.successful_jobs_history_limit,
        "failedJobsHistoryLimit": spec.failed_jobs_history_limit,
    }
    if spec.time_zone is not None:
        cron_spec["timeZone"] = spec.time_zone
    if spec.starting_deadline_seconds is not None:
        cron_spec["startingDeadlineSeconds"] = spec.starting_deadline_seconds
    cron_spec["jobTemplate"] = {"metadata": {"labels": dict(labels)}, "spec": job_spec}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": cronjob_name(name),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": model.API_VERSION,
                    "kind": model.KIND,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": cron_spec,
    }


#: The ``flow`` commands a one-off Job may run (``flow export-k8s --job``).
JOB_COMMANDS = ("run", "backfill", "state")


def render_job(
    resource_name: str,
    namespace: str | None,
    spec: model.EmatixPipelineSpec | Mapping[str, Any],
    args: Sequence[str],
) -> dict[str, Any]:
    """A one-off ``batch/v1`` Job running ``flow <args> --module <module>`` in the same
    pod as the pipeline's CronJob (image, connections, security context): what
    ``kubectl create job --from=cronjob/…`` with the command overridden gives, rendered
    without a cluster. ``args`` start with one of :data:`JOB_COMMANDS`, e.g.
    ``["backfill", "orders_sync", "--from", "2026-01-01", "--to", "2026-01-08"]``."""
    if not isinstance(spec, model.EmatixPipelineSpec):
        spec = model.EmatixPipelineSpec.from_k8s(dict(spec))
    if not args or args[0] not in JOB_COMMANDS:
        raise ConfigurationError(
            f"--job runs one of {', '.join(JOB_COMMANDS)} (e.g. --job 'backfill "
            f"{spec.pipeline} --from 2026-01-01 --to 2026-01-08'), got {' '.join(args)!r}"
        )
    if "--module" in args or "-m" in args:
        raise ConfigurationError("--job: leave out --module; the pipeline's module is used")
    if not spec.image:
        raise ConfigurationError(f"pipeline {spec.pipeline}: no image to run the Job with")
    pod = _pod_spec(spec, spec.image)
    pod["containers"][0]["command"] = ["flow", *args, "--module", spec.module]
    labels = dict(cronjob_labels(resource_name, spec.pipeline))
    labels["ematix.io/action"] = label_value(args[0])
    metadata: dict[str, Any] = {
        "name": _shorten(f"{cronjob_name(resource_name)}-{label_value(args[0])}", 52),
        "labels": labels,
        "annotations": {"ematix.io/command": " ".join(["flow", *args])},
    }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            # A state action is run by hand: no retries behind the operator's back
            # (a backfill resumes where it stopped when run again).
            "backoffLimit": 0,
            "podFailurePolicy": _pod_failure_policy(),
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
        },
    }
