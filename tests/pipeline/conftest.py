"""Pipeline tests share the engine tests' ``env`` fixture (connections to the per-test
databases and small query helpers) and ``names``: a list a test appends the names of
the pipelines it registers to, unregistered when the test ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ematix_flow import pipeline
from tests.engine.conftest import Env, env

__all__ = ["Env", "env", "names"]


@pytest.fixture
def names() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for n in made:
        pipeline._unregister(n)
