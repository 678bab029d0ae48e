"""Run the operator: kopf's event loop with our registry and the config's scope.

Used by the command line and by the tests (which run it in a thread against an API
emulator, with their own stop and ready flags)::

    asyncio.run(run(OperatorConfig(all_namespaces=True)))
"""

from __future__ import annotations

from typing import Any

import kopf

from ematix_flow_operator.config import OperatorConfig
from ematix_flow_operator.handlers import build_registry

__all__ = ["run"]


async def run(
    config: OperatorConfig,
    *,
    registry: kopf.OperatorRegistry | None = None,
    stop_flag: Any = None,
    ready_flag: Any = None,
) -> None:
    """Run until ``stop_flag`` is set (or SIGINT/SIGTERM when in the main thread)."""
    await kopf.operator(
        registry=registry if registry is not None else build_registry(config),
        standalone=config.peering is None,
        peering_name=config.peering,
        priority=config.priority,
        clusterwide=config.all_namespaces,
        namespaces=list(config.namespaces),
        liveness_endpoint=config.liveness_endpoint,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
