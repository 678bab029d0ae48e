"""ematix-flow: declarative PostgreSQL → PostgreSQL sync pipelines.

Example::

    from typing import Annotated
    from ematix_flow import ematix, pk
    from ematix_flow.types import BigInt, String

    @ematix.table(schema="warehouse")
    class Customer:
        customer_id: Annotated[BigInt, pk()]
        email: String[256]
"""

from __future__ import annotations

from ematix_flow._declarative import ematix, natural_key, nullable, pk
from ematix_flow._errors import EmatixFlowError
from ematix_flow.config import connect

__all__ = ["EmatixFlowError", "connect", "ematix", "natural_key", "nullable", "pk"]
__version__ = "0.1.0"
