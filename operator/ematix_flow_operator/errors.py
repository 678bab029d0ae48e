"""The operator's errors and the one place they become kopf's retry decisions.

::

    EmatixFlowError                       (ematix_flow._errors)
    └── OperatorError
        ├── InvalidSpecError      the resource's spec cannot be rendered: terminal until
        │                         the spec changes (Ready=False, an Event, no retry)
        ├── TransientApiError     409 conflict, 429, 5xx, a dropped connection: retry later
        └── ApiCallError          any other API refusal (403, 422…): terminal

Handlers never catch API exceptions themselves: the Kubernetes client layer
(:mod:`~ematix_flow_operator.kube`) turns them into these classes with
:func:`classify_api_error`, and every handler body runs inside :func:`kopf_errors`, which
maps them to ``kopf.TemporaryError`` (with a delay) or ``kopf.PermanentError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import kopf

from ematix_flow._errors import EmatixFlowError

__all__ = [
    "ApiCallError",
    "InvalidSpecError",
    "OperatorError",
    "TransientApiError",
    "classify_api_error",
    "kopf_errors",
]

#: HTTP statuses worth retrying: conflict, too many requests, server-side trouble.
TRANSIENT_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


class OperatorError(EmatixFlowError):
    """Root of the errors the operator raises on purpose."""


class InvalidSpecError(OperatorError, ValueError):
    """The spec of an EmatixPipeline cannot be turned into a CronJob.

    ``reason`` is a CamelCase word for the Ready condition and the Event
    (``InvalidSchedule``, ``UnknownTimeZone``, ``MissingSecretName``, ``MissingImage``,
    ``InvalidSpec``); the message names the field and the fix.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class TransientApiError(OperatorError):
    """The API server could not do it now; the same call may succeed later."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiCallError(OperatorError):
    """The API server refused a call in a way retrying will not fix."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def classify_api_error(exc: BaseException, *, doing: str) -> OperatorError:
    """Our error for a failed Kubernetes call; ``doing`` says what was attempted.

    ``kubernetes.client.ApiException`` with a status in :data:`TRANSIENT_STATUSES`, and
    transport errors (connection refused or reset, timeouts), are transient; every
    other refusal is terminal.
    """
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status:
        reason = getattr(exc, "reason", "") or ""
        message = f"{doing} failed: HTTP {status} {reason}".rstrip()
        if status in TRANSIENT_STATUSES:
            return TransientApiError(message, status=status)
        return ApiCallError(message, status=status)
    return TransientApiError(f"{doing} failed: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def kopf_errors(*, retry_delay: float) -> Iterator[None]:
    """Run a handler body, turning our errors into kopf's retry decisions.

    Transient errors become ``kopf.TemporaryError(delay=retry_delay)`` (kopf retries the
    handler), terminal ones ``kopf.PermanentError`` (kopf stops retrying until the
    resource changes). Anything else is left to kopf, which retries it with backoff.
    """
    try:
        yield
    except TransientApiError as exc:
        raise kopf.TemporaryError(str(exc), delay=retry_delay) from exc
    except (InvalidSpecError, ApiCallError) as exc:
        raise kopf.PermanentError(str(exc)) from exc
