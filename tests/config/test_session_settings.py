"""How the timeouts every session runs under are resolved: option, then environment,
then default; bad values are refused with a message that names them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ematix_flow._errors import ConfigurationError, DefinitionError
from ematix_flow._session import DEFAULT_LOCK_TIMEOUT_S, Timeouts, resolve_timeouts


def test_defaults_bound_lock_waits_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMATIX_FLOW_LOCK_TIMEOUT", raising=False)
    monkeypatch.delenv("EMATIX_FLOW_STATEMENT_TIMEOUT", raising=False)
    t = resolve_timeouts()
    assert t == Timeouts(lock_s=DEFAULT_LOCK_TIMEOUT_S, statement_s=None)
    assert dict(t.settings()) == {"lock_timeout": "30000ms", "statement_timeout": "0"}


def test_the_environment_overrides_the_default_and_an_option_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_LOCK_TIMEOUT", "2.5")
    monkeypatch.setenv("EMATIX_FLOW_STATEMENT_TIMEOUT", "0")
    assert resolve_timeouts() == Timeouts(lock_s=2.5, statement_s=None)
    assert resolve_timeouts(lock_timeout=1.0, statement_timeout=60.0) == Timeouts(1.0, 60.0)
    assert resolve_timeouts(lock_timeout=None) == Timeouts(lock_s=None, statement_s=None)


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMATIX_FLOW_LOCK_TIMEOUT", "30s")
    with pytest.raises(ConfigurationError, match="EMATIX_FLOW_LOCK_TIMEOUT='30s'"):
        resolve_timeouts()


def test_options_take_seconds_or_a_timedelta() -> None:
    from ematix_flow._engine.options import TargetOptions
    from ematix_flow.table import ManagedTable, table_spec
    from ematix_flow.types import BigInt, Column

    class T(ManagedTable):
        __schema__ = "s"
        __tablename__ = "t"
        id = Column(BigInt(), nullable=False, primary_key=True)

    spec = table_spec(T)
    o = TargetOptions(table=spec, mode="merge", lock_timeout=timedelta(minutes=2))
    assert o.timeouts.lock_s == 120.0
    assert TargetOptions(table=spec, mode="merge", lock_timeout=0).timeouts.lock_s is None
    with pytest.raises(DefinitionError, match="lock_timeout= takes seconds"):
        TargetOptions(table=spec, mode="merge", lock_timeout="5")
    with pytest.raises(DefinitionError, match="statement_timeout= must be 0"):
        TargetOptions(table=spec, mode="merge", statement_timeout=-1)
