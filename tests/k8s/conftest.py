"""Fixtures of the Kubernetes artifact tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from _helm import ensure_helm, run_helm


@pytest.fixture(scope="session")
def helm() -> Path:
    """A helm v3 binary, fetched into the tools cache on first use (see ``_helm``)."""
    path = ensure_helm()
    version = run_helm(path, "version", "--short")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("v3."), version.stdout
    return path
