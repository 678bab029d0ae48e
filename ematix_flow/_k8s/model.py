"""The ``EmatixPipeline`` custom resource: spec and status as pydantic models.

These models are the single source of truth for the resource. The CRD's
``openAPIV3Schema`` is generated from them (:mod:`ematix_flow._k8s.crd`), ``flow
export-k8s`` builds resources with them, and the operator parses what the API server
hands it with them::

    from ematix_flow._k8s.model import EmatixPipelineSpec

    spec = EmatixPipelineSpec.from_k8s(body["spec"])       # camelCase dict → model
    spec.concurrency_policy                                  # 'Forbid' (the default)
    spec.to_k8s()                                            # model → camelCase dict

Python attributes are snake_case; the resource's fields are camelCase (the alias of
each attribute). Every field carries a description: it becomes ``kubectl explain``
text. Constraints are expressed so they translate to the CRD's OpenAPI v3 subset:
``pattern``, ``enum`` (``Literal``), ``minimum`` (``ge=``) — never ``gt=``, whose
JSON-Schema form OpenAPI v3 does not share.

Names that clients need (``GROUP``, ``VERSION``, ``KIND``, ``PLURAL``…) are module
constants; they are stable: changing one is a breaking change of the resource.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

from ematix_flow.config import ENV_PREFIX, env_var_name

__all__ = [
    "API_VERSION",
    "CATEGORIES",
    "CONDITION_LAST_RUN_SUCCEEDED",
    "CONDITION_READY",
    "CRD_NAME",
    "CRON_PATTERN",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "Condition",
    "ConnectionRef",
    "EmatixPipeline",
    "EmatixPipelineSpec",
    "EmatixPipelineStatus",
    "EnvVar",
    "EnvVarSource",
    "KeySelector",
    "LastRun",
    "ResourceRequirements",
    "TargetInfo",
    "TargetRunSummary",
    "TargetTotals",
    "Toleration",
]

#: API group of the resource.
GROUP = "ematix.io"
#: The one served and stored version.
VERSION = "v1alpha1"
#: ``apiVersion`` of every EmatixPipeline object.
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "EmatixPipeline"
#: The resource name in URLs: ``kubectl get emtxpipelines`` resolves to it directly.
PLURAL = "emtxpipelines"
SINGULAR = "emtxpipeline"
SHORT_NAMES = ("emtx",)
#: ``kubectl get ematix`` lists every resource of the project.
CATEGORIES = ("ematix",)
#: ``metadata.name`` of the CustomResourceDefinition.
CRD_NAME = f"{PLURAL}.{GROUP}"

#: Condition types written by the operator.
CONDITION_READY = "Ready"
CONDITION_LAST_RUN_SUCCEEDED = "LastRunSucceeded"

#: A schedule as Kubernetes CronJobs accept it: five fields, or one of the macros.
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    r"|([0-9A-Za-z*/,?#-]+ +){4}[0-9A-Za-z*/,?#-]+)$"
)
#: A Python module path as ``--module`` takes it.
MODULE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
#: A connection name as the connection registry accepts it (maps to EMATIX_FLOW_DSN_<NAME>).
CONNECTION_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
#: A DNS-1123 subdomain (Secret and ServiceAccount names).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A Secret data key.
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
#: An environment variable name (C identifier; what a shell can export).
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: An IANA time zone name such as ``Europe/Paris`` or ``Etc/UTC``.
TIME_ZONE_PATTERN = r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$"

# A Kubernetes quantity ("500m", "1Gi", 2): integer or string, as the core API types it.
Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
        }
    ),
]

# Variables the CronJob sets itself; extra env may not override them.
_RESERVED_ENV = frozenset(
    {"EMATIX_FLOW_TERMINATION_MESSAGE_PATH", "HOME", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
)

Mode = Literal["append", "merge", "scd1", "scd2"]


class _Model(BaseModel):
    """Common configuration: camelCase aliases, frozen, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
    )

    def to_k8s(self) -> dict[str, Any]:
        """The camelCase, JSON-ready dict of this object, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def from_k8s(cls, data: dict[str, Any]) -> Self:
        """Parse a camelCase dict (as the API server returns it) into the model."""
        return cls.model_validate(data)


# --------------------------------------------------------------------------- spec


class ConnectionRef(_Model):
    """Where the pod finds the DSN of one named connection."""

    name: str = Field(
        pattern=CONNECTION_NAME_PATTERN,
        max_length=200,
        description=(
            "Connection name used by the pipeline (e.g. 'warehouse'). The pod gets it as "
            "the environment variable EMATIX_FLOW_DSN_<NAME> (upper case, '-' → '_')."
        ),
    )
    secret_name: str = Field(
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=253,
        description="Name of the Secret, in the resource's namespace, holding the DSN.",
    )
    key: str = Field(
        default="dsn",
        pattern=SECRET_KEY_PATTERN,
        max_length=253,
        description="Key of the Secret whose value is the DSN.",
    )


class TargetInfo(_Model):
    """One target of the pipeline, carried for display (the code decides what runs)."""

    table: str = Field(min_length=1, description="Qualified target table (schema.table).")
    mode: Mode | None = Field(default=None, description="Sync mode of the target.")
    keys: list[str] | None = Field(default=None, description="Merge keys, when known.")


class KeySelector(_Model):
    """A key of a Secret or ConfigMap."""

    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="Object name.")
    key: str = Field(pattern=SECRET_KEY_PATTERN, max_length=253, description="Data key.")
    optional: bool | None = Field(default=None, description="Whether the key may be absent.")


class EnvVarSource(_Model):
    """Where an environment variable's value comes from (exactly one of the two)."""

    secret_key_ref: KeySelector | None = Field(default=None, description="A Secret key.")
    config_map_key_ref: KeySelector | None = Field(default=None, description="A ConfigMap key.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError("valueFrom needs exactly one of secretKeyRef, configMapKeyRef")
        return self


class EnvVar(_Model):
    """An extra environment variable of the pipeline container."""

    name: str = Field(pattern=ENV_NAME_PATTERN, max_length=253, description="Variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: EnvVarSource | None = Field(default=None, description="Value from a key.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"env {self.name}: give value or valueFrom, not both")
        return self


class ResourceRequirements(_Model):
    """Compute resources of the pipeline container, as in a core Container."""

    requests: dict[str, Quantity] | None = Field(
        default=None, description="Minimum resources, e.g. {cpu: 100m, memory: 256Mi}."
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, description="Maximum resources, e.g. {memory: 1Gi}."
    )


class Toleration(_Model):
    """A pod toleration, as in a core PodSpec."""

    key: str | None = Field(default=None, description="Taint key; empty matches all keys.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (the Kubernetes default)."
    )
    value: str | None = Field(default=None, description="Taint value (with Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute: how long the pod stays bound."
    )


class EmatixPipelineSpec(_Model):
    """What to run, when, and with which connections: rendered into one CronJob."""

    pipeline: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="Name of the registered pipeline (`flow run <pipeline>`).",
    )
    module: str = Field(
        pattern=MODULE_PATTERN,
        max_length=253,
        description="Python module that registers the pipeline (`--module`).",
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Container image holding `flow` and the pipeline's module; default: the "
            "operator's default pipeline image (chart value pipelineImage)."
        ),
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Image pull policy of the pipeline container."
    )
    schedule: str = Field(
        pattern=CRON_PATTERN,
        description="Cron schedule (five fields, or @hourly, @daily, …).",
    )
    time_zone: str | None = Field(
        default=None,
        pattern=TIME_ZONE_PATTERN,
        description="IANA time zone of the schedule (e.g. Europe/Paris); default: UTC.",
    )
    suspend: bool = Field(default=False, description="Suspend scheduling of new runs.")
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = Field(
        default="Forbid",
        description="What to do when a run is due while the previous one still runs.",
    )
    starting_deadline_seconds: int | None = Field(
        default=None, ge=0, description="Seconds after a missed schedule a run may still start."
    )
    backoff_limit: int = Field(
        default=1, ge=0, description="Retries of a failed run before the Job is marked failed."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Maximum duration of a run, in seconds."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete a finished Job after this many seconds."
    )
    successful_jobs_history_limit: int = Field(
        default=3, ge=0, description="Finished successful Jobs to keep."
    )
    failed_jobs_history_limit: int = Field(
        default=3, ge=0, description="Finished failed Jobs to keep."
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Compute resources of the pipeline container."
    )
    service_account_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=253,
        description="ServiceAccount of the pipeline pods (default: the namespace's default).",
    )
    node_selector: dict[str, str] | None = Field(
        default=None, description="Node labels the pipeline pods must run on."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, description="Tolerations of the pipeline pods."
    )
    env: list[EnvVar] | None = Field(
        default=None, description="Extra environment variables of the pipeline container."
    )
    connections: list[ConnectionRef] = Field(
        default_factory=list,
        description="Connections the pipeline uses, each read from a Secret key.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    targets: list[TargetInfo] = Field(
        default_factory=list, description="Targets of the pipeline (informational)."
    )

    @model_validator(mode="after")
    def _distinct_variables(self) -> Self:
        # Checks the CRD schema cannot express; the operator reports them as a bad spec.
        seen: dict[str, str] = {}
        for conn in self.connections:
            var = env_var_name(conn.name)
            if var in seen:
                raise ValueError(
                    f"connections {seen[var]!r} and {conn.name!r} both map to {var}; "
                    "keep one of them"
                )
            seen[var] = conn.name
        names: set[str] = set()
        for extra in self.env or ():
            if extra.name.startswith(ENV_PREFIX) or extra.name in _RESERVED_ENV:
                raise ValueError(
                    f"env {extra.name} is set by ematix-flow itself; declare DSNs under "
                    "connections instead"
                )
            if extra.name in names:
                raise ValueError(f"env {extra.name} is given twice")
            names.add(extra.name)
        return self


# --------------------------------------------------------------------------- status


class Condition(_Model):
    """A status condition in the usual Kubernetes shape."""

    type: str = Field(min_length=1, description="Ready or LastRunSucceeded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, description="CamelCase reason.")
    message: str | None = Field(default=None, description="Human-readable details.")
    last_transition_time: datetime | None = Field(
        default=None, description="When the status last changed."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="Generation the condition was computed from."
    )


class TargetRunSummary(_Model):
    """What one target of the last run did."""

    target: str = Field(description="Qualified target table.")
    mode: str | None = Field(default=None, description="Sync mode.")
    status: str = Field(description="Outcome, e.g. succeeded, failed, skipped.")
    rows_inserted: int | None = Field(default=None, ge=0, description="Rows inserted.")
    rows_updated: int | None = Field(default=None, ge=0, description="Rows updated.")
    rows_deleted: int | None = Field(default=None, ge=0, description="Rows deleted.")
    rows_unchanged: int | None = Field(
        default=None, ge=0, description="Source rows that changed nothing."
    )
    rows_expired: int | None = Field(
        default=None, ge=0, description="Current versions closed by the ttl (scd2)."
    )
    watermark: str | None = Field(
        default=None, description="The target's watermark after the run (incremental sources)."
    )
    error: str | None = Field(default=None, description="Error message (no secrets).")


class TargetTotals(_Model):
    """One target's rows over every run the operator counted (each Job once)."""

    target: str = Field(min_length=1, description="Qualified target table.")
    rows_inserted: int = Field(default=0, ge=0, description="Rows inserted, all runs.")
    rows_updated: int = Field(default=0, ge=0, description="Rows updated, all runs.")
    rows_deleted: int = Field(default=0, ge=0, description="Rows deleted, all runs.")
    rows_unchanged: int = Field(default=0, ge=0, description="Unchanged source rows, all runs.")
    rows_expired: int = Field(default=0, ge=0, description="Versions expired by ttl, all runs.")
    watermark: str | None = Field(
        default=None, description="The watermark after the target's latest successful run."
    )


class LastRun(_Model):
    """The most recent Job of the pipeline and its outcome."""

    job_name: str | None = Field(default=None, description="Name of the Job.")
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = Field(
        default=None, description="Pending, Running, Succeeded or Failed."
    )
    start_time: datetime | None = Field(default=None, description="When the Job started.")
    completion_time: datetime | None = Field(default=None, description="When it finished.")
    duration_seconds: float | None = Field(default=None, ge=0, description="Run duration.")
    exit_code: int | None = Field(default=None, description="Exit code of the `flow` process.")
    message: str | None = Field(default=None, description="Why it failed, if it did.")
    targets: list[TargetRunSummary] = Field(
        default_factory=list, description="Per-target outcome, from the run summary."
    )
    truncated: bool | None = Field(
        default=None, description="The run summary was shortened to fit the size limit."
    )


class EmatixPipelineStatus(_Model):
    """What the operator observed; written to the status subresource only."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="Generation of the spec last rendered."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready (the CronJob is in place) and LastRunSucceeded.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    cron_job_name: str | None = Field(default=None, description="Name of the owned CronJob.")
    last_schedule_time: datetime | None = Field(
        default=None, description="When a run was last scheduled."
    )
    last_run: LastRun | None = Field(default=None, description="The most recent run.")
    last_successful_time: datetime | None = Field(
        default=None, description="When a run last succeeded."
    )
    consecutive_failures: int = Field(
        default=0, ge=0, description="Failed runs since the last success."
    )
    last_finished_run: LastRun | None = Field(
        default=None,
        description="The most recent run that finished (lastRun may be one still going).",
    )
    target_totals: list[TargetTotals] = Field(
        default_factory=list,
        description="Per target: rows over every counted run, and the latest watermark.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["target"],
        },
    )


class _ObjectMeta(BaseModel):
    """The part of ``metadata`` the model cares about (the API server owns the rest)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class EmatixPipeline(_Model):
    """A whole resource, as ``flow export-k8s`` writes it and ``kubectl apply`` reads it."""

    api_version: Literal["ematix.io/v1alpha1"] = API_VERSION
    kind: Literal["EmatixPipeline"] = KIND
    metadata: _ObjectMeta
    spec: EmatixPipelineSpec
    status: EmatixPipelineStatus | None = None
