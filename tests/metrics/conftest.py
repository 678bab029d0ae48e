"""Fixtures of the monitoring tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.k8s._helm import ensure_helm


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm v3, fetched as the chart tests fetch it (see ``tests/k8s/_helm.py``)."""
    return ensure_helm()
