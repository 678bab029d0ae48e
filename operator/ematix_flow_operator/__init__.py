"""The ematix-flow operator: EmatixPipeline resources → CronJobs, run outcomes → status.

Started by the ``ematix-flow-operator`` command (:mod:`~ematix_flow_operator.cli`), which
the Helm chart's Deployment runs. The layers, each a module:

* :mod:`~ematix_flow_operator.spec` — the resource's spec → the model, or a precise
  :class:`~ematix_flow_operator.errors.InvalidSpecError` (pure);
* :mod:`~ematix_flow_operator.reconcile` — desired CronJob, drift check (pure; the
  manifest itself comes from :func:`ematix_flow._k8s.cronjob.render_cronjob`);
* :mod:`~ematix_flow_operator.status` — Jobs, Pods and their termination messages →
  the resource's status (pure);
* :mod:`~ematix_flow_operator.kube` — the few API calls, on plain dicts;
* :mod:`~ematix_flow_operator.errors` — the error tree and the one mapping to kopf's
  ``TemporaryError`` / ``PermanentError``;
* :mod:`~ematix_flow_operator.handlers` — thin kopf handlers in a registry built per
  :class:`~ematix_flow_operator.config.OperatorConfig`.

The package lives in the repository's ``operator/`` folder, which is deliberately not
a package itself: the standard library's ``operator`` module must never be shadowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ematix_flow_operator.config import OperatorConfig

if TYPE_CHECKING:
    from ematix_flow_operator.handlers import Operator, build_registry
    from ematix_flow_operator.runner import run

__all__ = ["Operator", "OperatorConfig", "build_registry", "run"]


def __getattr__(name: str) -> Any:
    # kopf and kubernetes load only when the operator runs, so `--help` stays fast.
    if name in {"Operator", "build_registry"}:
        from ematix_flow_operator import handlers

        return getattr(handlers, name)
    if name == "run":
        from ematix_flow_operator.runner import run

        return run
    raise AttributeError(f"module 'ematix_flow_operator' has no attribute {name!r}")
