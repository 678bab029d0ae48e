"""Resolution of named connections (spec §3.1): precedence level by level, files,
interpolation, name normalization and the errors a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from ematix_flow import config
from ematix_flow._errors import ConfigurationError, UnknownConnectionError

ENV_URL = "postgresql://env_user@env-host:5401/env_db"
ENV_DEFAULT_URL = "postgresql://envd_user@envd-host:5402/envd_db"
PROJECT_URL = "postgresql://proj_user@proj-host:5403/proj_db"
USER_URL = "postgresql://home_user@home-host:5404/home_db"
EXPLICIT_URL = "postgresql://code_user@code-host:5405/code_db"


def write_project(text: str) -> Path:
    path = Path.cwd() / ".ematix-flow.toml"
    path.write_text(text)
    return path


def write_user(text: str) -> Path:
    path = Path.home() / ".ematix-flow" / "connections.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def entry(name: str, dsn: str) -> str:
    return f'[connections.{name}]\ndsn = "{dsn}"\n'


# --------------------------------------------------------------------------- precedence


@pytest.fixture
def all_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    """'default' configured at every level, each with a different host."""
    monkeypatch.setenv("EMATIX_FLOW_DSN_DEFAULT", ENV_URL)
    monkeypatch.setenv("EMATIX_FLOW_DSN", ENV_DEFAULT_URL)
    write_project(entry("default", PROJECT_URL))
    write_user(entry("default", USER_URL))


def test_level_1_named_env_var_beats_everything(all_levels: None) -> None:
    conn = config.connect("default", url=EXPLICIT_URL)
    assert (conn.host, conn.origin) == ("env-host", "env EMATIX_FLOW_DSN_DEFAULT")


def test_level_2_plain_env_var_beats_files(
    all_levels: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMATIX_FLOW_DSN_DEFAULT")
    conn = config.connect()
    assert (conn.host, conn.origin) == ("envd-host", "env EMATIX_FLOW_DSN")
    assert conn.name == "default"


def test_level_3_project_file_beats_user_file(
    all_levels: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMATIX_FLOW_DSN_DEFAULT")
    monkeypatch.delenv("EMATIX_FLOW_DSN")
    conn = config.connect("default", url=EXPLICIT_URL)
    assert (conn.host, conn.origin) == ("proj-host", "./.ematix-flow.toml")


def test_level_4_user_file_beats_explicit_url(
    all_levels: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMATIX_FLOW_DSN_DEFAULT")
    monkeypatch.delenv("EMATIX_FLOW_DSN")
    (Path.cwd() / ".ematix-flow.toml").unlink()
    conn = config.connect("default", url=EXPLICIT_URL)
    assert (conn.host, conn.origin) == ("home-host", "~/.ematix-flow/connections.toml")


def test_level_5_explicit_url_is_the_fallback_for_a_name() -> None:
    conn = config.connect("default", url=EXPLICIT_URL)
    assert (conn.host, conn.origin, conn.name) == ("code-host", "explicit url", "default")


def test_url_alone_is_the_explicit_url_even_when_default_is_configured(
    all_levels: None,
) -> None:
    conn = config.connect(url=EXPLICIT_URL)
    assert (conn.host, conn.origin, conn.name) == ("code-host", "explicit url", None)


def test_plain_env_var_is_only_for_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN", ENV_DEFAULT_URL)
    with pytest.raises(UnknownConnectionError):
        config.connect("warehouse")
    assert config.connect().host == "envd-host"


def test_empty_env_var_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", "")
    write_user(entry("warehouse", USER_URL))
    assert config.connect("warehouse").origin == "~/.ematix-flow/connections.toml"


def test_project_file_is_read_from_the_cwd_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_user(entry("warehouse", USER_URL))
    project = tmp_path / "project"
    project.mkdir()
    (project / ".ematix-flow.toml").write_text(entry("warehouse", PROJECT_URL))
    assert config.connect("warehouse").host == "home-host"
    monkeypatch.chdir(project)
    assert config.connect("warehouse").host == "proj-host"


def test_each_file_contributes_its_own_names() -> None:
    write_project(entry("oltp", PROJECT_URL))
    write_user(entry("warehouse", USER_URL))
    assert config.connect("oltp").origin == "./.ematix-flow.toml"
    assert config.connect("warehouse").origin == "~/.ematix-flow/connections.toml"


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["alt_warehouse", "alt-warehouse", "ALT-Warehouse"])
def test_names_normalize_to_one_env_var(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_ALT_WAREHOUSE", ENV_URL)
    assert config.env_var_name(name) == "EMATIX_FLOW_DSN_ALT_WAREHOUSE"
    conn = config.connect(name)
    assert (conn.name, conn.origin) == (name, "env EMATIX_FLOW_DSN_ALT_WAREHOUSE")


def test_file_keys_match_either_spelling() -> None:
    write_user(entry("alt-warehouse", USER_URL))
    assert config.connect("alt_warehouse").host == "home-host"


@pytest.mark.parametrize("name", ["", "ware house", "wh.prod", "-wh", "entrepôt", "a=b"])
def test_names_that_cannot_be_normalized_are_rejected(name: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid connection name") as info:
        config.connect(name)
    assert "EMATIX_FLOW_DSN_<NAME>" in str(info.value)


def test_two_spellings_of_one_name_in_a_file_are_an_error() -> None:
    path = write_user(entry("alt-wh", USER_URL) + entry("alt_wh", USER_URL))
    with pytest.raises(ConfigurationError, match="same connection") as info:
        config.connect("alt-wh")
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- DSN forms


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgres://u:pw@h1:6000/d1", ("h1", 6000, "d1", "u")),
        ("postgresql://u@h2/d2", ("h2", None, "d2", "u")),
        ("host=h3 port=6001 dbname=d3 user=u3 password=pw", ("h3", 6001, "d3", "u3")),
        ("postgresql://u:@/d4?host=/tmp/sock", ("/tmp/sock", None, "d4", "u")),
    ],
)
def test_urls_and_conninfo_strings_are_accepted(
    dsn: str, expected: tuple[object, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_X", dsn)
    conn = config.connect("x")
    assert (conn.host, conn.port, conn.dbname, conn.user) == expected


def test_a_non_postgres_url_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_X", "mysql://u:pw@h/db")
    with pytest.raises(ConfigurationError, match=r"'mysql'.*PostgreSQL only"):
        config.connect("x")


def test_an_unparsable_dsn_names_its_origin_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_X", "host=h password=S3cr3t Pw-9f4e")
    with pytest.raises(ConfigurationError, match="EMATIX_FLOW_DSN_X") as info:
        config.connect("x")
    assert "S3cr3t" not in str(info.value)
    assert "Pw-9f4e" not in str(info.value)


# --------------------------------------------------------------------------- interpolation


def test_dollar_brace_variables_are_interpolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WH_HOST", "interp-host")
    monkeypatch.setenv("WH_PASSWORD", "pw")
    write_project(entry("warehouse", "postgresql://u:${WH_PASSWORD}@${WH_HOST}:5432/db"))
    conn = config.connect("warehouse")
    assert (conn.host, conn.dsn) == ("interp-host", "postgresql://u:pw@interp-host:5432/db")


def test_a_whole_dsn_can_come_from_a_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAREHOUSE_DSN", USER_URL)
    write_user(entry("warehouse", "${WAREHOUSE_DSN}"))
    assert config.connect("warehouse").host == "home-host"


def test_an_unset_variable_names_the_variable_and_the_file() -> None:
    path = write_project(entry("warehouse", "${NO_SUCH_VARIABLE_XYZ}"))
    with pytest.raises(ConfigurationError) as info:
        config.connect("warehouse")
    message = str(info.value)
    assert "NO_SUCH_VARIABLE_XYZ" in message
    assert str(path) in message
    assert "[connections.warehouse]" in message


def test_env_var_values_are_not_interpolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_X", "host=h dbname=${NOT_TOUCHED}")
    assert config.connect("x").dbname == "${NOT_TOUCHED}"


# --------------------------------------------------------------------------- errors


def test_unknown_name_lists_every_place_looked_and_how_to_fix() -> None:
    with pytest.raises(UnknownConnectionError) as info:
        config.connect("alt-warehouse")
    message = str(info.value)
    assert "EMATIX_FLOW_DSN_ALT_WAREHOUSE" in message
    assert str(Path.cwd() / ".ematix-flow.toml") in message
    assert str(Path.home() / ".ematix-flow" / "connections.toml") in message
    assert "flow connections set alt-warehouse=" in message
    assert isinstance(info.value, ConfigurationError)


def test_unknown_default_also_mentions_the_plain_env_var() -> None:
    with pytest.raises(UnknownConnectionError, match=r"EMATIX_FLOW_DSN\b(?!_)"):
        config.connect()


def test_unknown_name_lists_the_configured_ones() -> None:
    write_user(entry("warehouse", USER_URL))
    with pytest.raises(UnknownConnectionError, match="Configured names: warehouse"):
        config.connect("wharehouse")


def test_malformed_toml_names_the_file_and_the_line() -> None:
    path = write_user('[connections.warehouse]\ndsn = "ok"\nbroken = \n')
    with pytest.raises(ConfigurationError) as info:
        config.connect("warehouse")
    assert str(path) in str(info.value)
    assert "line 3" in str(info.value)


def test_an_entry_without_dsn_is_named() -> None:
    path = write_project("[connections.warehouse]\nhost = 'h'\n")
    with pytest.raises(ConfigurationError, match=r"\[connections.warehouse\].*dsn") as info:
        config.connect("warehouse")
    assert str(path) in str(info.value)


def test_env_var_wins_without_reading_a_broken_file(monkeypatch: pytest.MonkeyPatch) -> None:
    write_project("this is not toml")
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", ENV_URL)
    assert config.connect("warehouse").host == "env-host"


# --------------------------------------------------------------------------- listing


def test_list_connections_gives_each_name_once_with_its_winning_origin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN", ENV_DEFAULT_URL)
    monkeypatch.setenv("EMATIX_FLOW_DSN_ALT_WAREHOUSE", ENV_URL)
    monkeypatch.setenv("EMATIX_FLOW_DSN_lower", ENV_URL)  # not a name connect() reads
    write_project(entry("oltp", PROJECT_URL) + entry("alt-warehouse", PROJECT_URL))
    write_user(entry("oltp", USER_URL) + entry("archive", USER_URL))
    listed = {c.name: c.origin for c in config.list_connections()}
    assert listed == {
        "alt_warehouse": "env EMATIX_FLOW_DSN_ALT_WAREHOUSE",
        "archive": "~/.ematix-flow/connections.toml",
        "default": "env EMATIX_FLOW_DSN",
        "oltp": "./.ematix-flow.toml",
    }
    assert [c.name for c in config.list_connections()] == sorted(listed)


def test_list_connections_prefers_the_named_default_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN", ENV_DEFAULT_URL)
    monkeypatch.setenv("EMATIX_FLOW_DSN_DEFAULT", ENV_URL)
    (conn,) = config.list_connections()
    assert (conn.name, conn.origin) == ("default", "env EMATIX_FLOW_DSN_DEFAULT")


def test_list_connections_raises_on_a_broken_entry_but_the_listing_keeps_it() -> None:
    write_user(entry("warehouse", USER_URL) + entry("broken", "${UNSET_VAR_FOR_LIST}"))
    with pytest.raises(ConfigurationError, match="UNSET_VAR_FOR_LIST"):
        config.list_connections()
    listed = {e.name: e for e in config.configured_connections()}
    assert listed["warehouse"].connection is not None
    assert listed["broken"].connection is None
    assert "UNSET_VAR_FOR_LIST" in (listed["broken"].error or "")
