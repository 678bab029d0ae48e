"""Pipeline tests share the engine tests' ``env`` fixture (connections to the per-test
databases and small query helpers)."""

from __future__ import annotations

from tests.engine.conftest import Env, env

__all__ = ["Env", "env"]
