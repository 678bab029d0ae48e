"""The exceptions ematix-flow raises, one tree under :class:`EmatixFlowError`.

::

    EmatixFlowError
    ├── DefinitionError          a table or pipeline is declared wrongly (raised at import)
    │   └── MarkerUsageError     ``pk`` used bare instead of ``pk()``
    ├── ConfigurationError       connections, config files, environment
    │   └── UnknownConnectionError
    ├── ConnectionFailedError    a configured database could not be reached
    ├── SourceError              the source query or table does not fit the target
    ├── SyncError                a run failed while writing the target
    │   └── DriftError           the target table differs destructively from its spec
    └── PipelineNotFoundError    no registered pipeline has that name

Every message names the thing at fault (pipeline, target, column, connection name) and
how to fix it. Messages never carry a password: DSNs are redacted before they are
formatted into one. Driver errors are chained with ``raise … from exc``.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "ConnectionFailedError",
    "DefinitionError",
    "DriftError",
    "EmatixFlowError",
    "MarkerUsageError",
    "PipelineNotFoundError",
    "SourceError",
    "SyncError",
    "UnknownConnectionError",
]


class EmatixFlowError(Exception):
    """Root of every error ematix-flow raises on purpose."""


class DefinitionError(EmatixFlowError, ValueError):
    """A table, column or pipeline declaration is invalid."""


class MarkerUsageError(DefinitionError):
    """A marker such as ``pk`` was used without calling it."""


class ConfigurationError(EmatixFlowError):
    """Connections or configuration files are missing or malformed."""


class UnknownConnectionError(ConfigurationError, LookupError):
    """No configuration source defines the requested connection name."""


class ConnectionFailedError(EmatixFlowError):
    """A database could not be reached or refused the login."""


class SourceError(EmatixFlowError):
    """The source does not fit the target: missing column, duplicate keys, bad cast."""


class SyncError(EmatixFlowError):
    """Writing a target failed; its transaction was rolled back."""


class DriftError(SyncError):
    """The existing target table differs from its spec in a way we will not change."""


class PipelineNotFoundError(EmatixFlowError, LookupError):
    """No registered pipeline has the requested name."""
