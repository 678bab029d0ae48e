"""Fixtures for the preview / dry-run tests (helpers live in ``preview_helpers``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from preview_helpers import Project

from ematix_flow import pipeline


@pytest.fixture(autouse=True)
def _forget_registered_pipelines() -> Iterator[None]:
    """Pipelines and modules a test declared leave the registry and sys.modules."""
    before, modules = set(pipeline.registry()), set(sys.modules)
    path = list(sys.path)
    yield
    for name in set(pipeline.registry()) - before:
        pipeline._unregister(name)
    for name in set(sys.modules) - modules:
        if name.startswith("pv_"):
            sys.modules.pop(name, None)
    sys.path[:] = path


@pytest.fixture
def project(dbs: Any, monkeypatch: pytest.MonkeyPatch) -> Project:
    return Project(dbs, monkeypatch)
