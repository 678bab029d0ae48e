"""Turn an EmatixPipeline's spec into the model, or say precisely why it cannot be.

The API server validates the spec against the CRD schema (patterns, required fields),
but a resource can still reach the operator with a schedule no cron accepts, a time
zone that does not exist, or — on clusters with an older CRD — a connection without a
Secret name. :func:`parse_spec` checks what the schema cannot and turns every problem
into one :class:`~ematix_flow_operator.errors.InvalidSpecError` with a reason for the
Ready condition::

    parse_spec({"pipeline": "p", "module": "m", "image": "i", "schedule": "61 * * * *"})
    # InvalidSpecError: spec.schedule '61 * * * *' is not a valid cron expression (…)
    # .reason == "InvalidSchedule"

Pure: no cluster, no I/O.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from typing import Any

from croniter import croniter
from pydantic import ValidationError

from ematix_flow._k8s.model import EmatixPipelineSpec
from ematix_flow_operator.errors import InvalidSpecError

__all__ = ["parse_spec"]

_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def _loc(loc: tuple[int | str, ...]) -> str:
    text = "spec"
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _from_validation_error(exc: ValidationError, spec: Mapping[str, Any]) -> InvalidSpecError:
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    field = loc[-1] if loc else ""
    where = _loc(loc)
    missing = first["type"] == "missing"
    if loc[:1] == ("connections",) and field == "secretName":
        index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
        conns = spec.get("connections") or []
        name = conns[index].get("name") if index is not None and index < len(conns) else None
        return InvalidSpecError(
            "MissingSecretName",
            f"{where} is {'missing' if missing else 'invalid'}: name the Secret that holds "
            f"the DSN of connection {name!r} (key 'dsn' unless spec.connections[].key says "
            "otherwise)",
        )
    if field == "image":
        return InvalidSpecError(
            "MissingImage",
            f"{where} is {'missing' if missing else 'empty'}: set the container image that "
            "holds `flow` and the pipeline's module",
        )
    if field == "schedule":
        return InvalidSpecError(
            "InvalidSchedule",
            f"{where} {spec.get('schedule')!r} is not a cron schedule Kubernetes accepts: use "
            "five fields ('0 */6 * * *') or a macro such as @hourly",
        )
    if field == "timeZone":
        return InvalidSpecError(
            "UnknownTimeZone",
            f"{where} {spec.get('timeZone')!r} is not an IANA time zone name such as "
            "'Europe/Paris' or 'Etc/UTC'",
        )
    summary = "; ".join(f"{_loc(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
    return InvalidSpecError(
        "InvalidSpec", f"the spec does not fit the EmatixPipeline schema: {summary}"
    )


def parse_spec(spec: Mapping[str, Any] | None) -> EmatixPipelineSpec:
    """The validated model of ``spec`` (the resource's camelCase ``spec`` dict).

    Raises :class:`InvalidSpecError` naming the first problem found: the model's own
    validation, then the schedule (croniter) and the time zone (the IANA database via
    :mod:`zoneinfo`).
    """
    raw = dict(spec or {})
    try:
        model = EmatixPipelineSpec.from_k8s(raw)
    except ValidationError as exc:
        raise _from_validation_error(exc, raw) from exc
    if model.schedule not in _MACROS and not croniter.is_valid(model.schedule):
        try:
            croniter(model.schedule)
        except Exception as exc:  # croniter raises several unrelated types
            detail = str(exc)
        else:  # pragma: no cover - is_valid() and the constructor agree
            detail = "rejected by croniter"
        raise InvalidSpecError(
            "InvalidSchedule",
            f"spec.schedule {model.schedule!r} is not a valid cron expression ({detail}); "
            "use five fields such as '0 */6 * * *' or a macro such as @hourly",
        )
    if model.time_zone is not None:
        try:
            zoneinfo.ZoneInfo(model.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidSpecError(
                "UnknownTimeZone",
                f"spec.timeZone {model.time_zone!r} is not in the IANA time zone database: "
                "use a name such as 'Europe/Paris' or 'Etc/UTC'",
            ) from exc
    return model
