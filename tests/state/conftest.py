"""Fixtures of the state-steering tests (helpers live in ``state_helpers``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from ematix_flow import pipeline
from tests.state.state_helpers import StateProject


@pytest.fixture(autouse=True)
def _forget_registered_pipelines() -> Iterator[None]:
    """Pipelines and modules a test declared leave the registry and sys.modules."""
    before, modules, path = set(pipeline.registry()), set(sys.modules), list(sys.path)
    yield
    for name in set(pipeline.registry()) - before:
        pipeline._unregister(name)
    for name in set(sys.modules) - modules:
        if name.startswith("st_pipes_"):
            sys.modules.pop(name, None)
    sys.path[:] = path


@pytest.fixture
def project(dbs: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[StateProject]:
    env = StateProject(dbs, monkeypatch)
    yield env
    env.close()
