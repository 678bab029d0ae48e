"""``flow connections list | check | set`` end to end, against the real test server.

Every test that configures a password uses a distinctive one and asserts it never
reaches stdout or stderr, including the driver's failure messages.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

from ematix_flow._cli.main import app
from ematix_flow._exitcodes import ExitCode
from tests.cli.test_main import FLOW_SCRIPT

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Role

PASSWORD = "S3cr3t-Pw-9f4e"
REFUSED_URL = f"postgresql://app:{PASSWORD}@127.0.0.1:1/wh"


def flow(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for text in (result.stdout, result.stderr):
        assert PASSWORD not in text
        assert "Traceback" not in text
    return result.exit_code, result.stdout, result.stderr


def user_file() -> Path:
    return Path.home() / ".ematix-flow" / "connections.toml"


def with_dbname(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params.update(dbname=dbname)
    return make_conninfo(**params)


# --------------------------------------------------------------------------- list


def test_list_with_nothing_configured_says_how_to_configure() -> None:
    code, out, _ = flow("connections", "list")
    assert code == ExitCode.OK
    assert "No connections configured" in out
    assert "flow connections set" in out


def test_list_shows_origin_and_parts_never_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "EMATIX_FLOW_DSN_WAREHOUSE", f"postgresql://wh_user:{PASSWORD}@wh-host:5433/dw"
    )
    (Path.cwd() / ".ematix-flow.toml").write_text(
        f'[connections.oltp]\ndsn = "host=oltp-host dbname=main user=o password={PASSWORD}"\n'
    )
    code, out, _ = flow("connections", "list")
    assert code == ExitCode.OK
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert lines["warehouse"].split() == [
        "warehouse",
        "env",
        "EMATIX_FLOW_DSN_WAREHOUSE",
        "wh-host",
        "5433",
        "dw",
        "wh_user",
    ]
    assert lines["oltp"].split()[1:4] == ["./.ematix-flow.toml", "oltp-host", "(default)"]


def test_list_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN", f"postgresql://u:{PASSWORD}@h:5434/d")
    code, out, _ = flow("connections", "list", "--format", "json")
    assert code == ExitCode.OK
    assert json.loads(out) == [
        {
            "name": "default",
            "origin": "env EMATIX_FLOW_DSN",
            "host": "h",
            "port": 5434,
            "dbname": "d",
            "user": "u",
            "dsn": "postgresql://u:***@h:5434/d",
            "error": None,
        }
    ]


def test_list_shows_a_broken_entry_instead_of_stopping() -> None:
    user_file().parent.mkdir(parents=True)
    user_file().write_text(
        '[connections.good]\ndsn = "postgresql://h/db"\n'
        '[connections.bad]\ndsn = "${UNSET_FOR_CLI_LIST}"\n'
    )
    code, out, _ = flow("connections", "list")
    assert code == ExitCode.OK
    assert "good" in out
    assert "UNSET_FOR_CLI_LIST" in out


def test_list_with_malformed_toml_is_a_config_error() -> None:
    (Path.cwd() / ".ematix-flow.toml").write_text("[connections.x\n")
    code, out, err = flow("connections", "list")
    assert code == ExitCode.CONFIG_ERROR
    assert out == ""
    assert err.startswith("error: ")
    assert ".ematix-flow.toml" in err
    assert "line 1" in err


# --------------------------------------------------------------------------- check


def test_check_reports_a_refused_connection_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", REFUSED_URL)
    code, out, _ = flow("connections", "check", "--timeout", "2")
    assert code == ExitCode.RUN_FAILED
    assert out.startswith("FAILED warehouse")
    assert "Connection refused" in out
    assert "postgresql://app:***@127.0.0.1:1/wh" in out


def test_check_json_for_a_conninfo_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "EMATIX_FLOW_DSN_WAREHOUSE", f"host=127.0.0.1 port=1 dbname=wh password={PASSWORD}"
    )
    code, out, _ = flow("connections", "check", "warehouse", "--format", "json")
    assert code == ExitCode.RUN_FAILED
    (result,) = json.loads(out)
    assert (result["name"], result["ok"]) == ("warehouse", False)
    assert "password=***" in result["reason"]


@pytest.mark.db
def test_check_mixes_ok_and_failed_and_exits_non_zero(
    own_role: Callable[[str], Role], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = own_role(PASSWORD).new_database()
    monkeypatch.setenv("EMATIX_FLOW_DSN_GOOD", good)
    monkeypatch.setenv("EMATIX_FLOW_DSN_NODB", with_dbname(good, "no_such_database"))
    monkeypatch.setenv("EMATIX_FLOW_DSN_REFUSED", REFUSED_URL)
    code, out, _ = flow("connections", "check")
    assert code == ExitCode.RUN_FAILED
    status = {line.split()[1]: line.split()[0] for line in out.splitlines() if line[:1] != " "}
    assert status == {"good": "OK", "nodb": "FAILED", "refused": "FAILED"}
    assert 'database "no_such_database" does not exist' in out

    code, out, _ = flow("connections", "check", "good")
    assert code == ExitCode.OK
    assert out.startswith("OK     good")
    assert "PostgreSQL 1" in out


def test_check_of_an_unknown_name_is_a_config_error() -> None:
    code, _, err = flow("connections", "check", "nowhere")
    assert code == ExitCode.CONFIG_ERROR
    assert "EMATIX_FLOW_DSN_NOWHERE" in err
    assert "Traceback" not in err


def test_check_with_nothing_configured_is_a_config_error() -> None:
    code, _, err = flow("connections", "check")
    assert code == ExitCode.CONFIG_ERROR
    assert "no connections configured" in err


def test_check_reports_an_unset_variable_as_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    (Path.cwd() / ".ematix-flow.toml").write_text(
        '[connections.warehouse]\ndsn = "${UNSET_FOR_CHECK}"\n'
    )
    code, out, _ = flow("connections", "check")
    assert code == ExitCode.RUN_FAILED
    assert out.startswith("FAILED warehouse")
    assert "UNSET_FOR_CHECK" in out


# --------------------------------------------------------------------------- set


@pytest.mark.db
def test_set_then_list_then_check_against_the_real_server(
    own_role: Callable[[str], Role],
) -> None:
    url = own_role(PASSWORD).new_database()
    code, out, _ = flow("connections", "set", f"warehouse={url}")
    assert code == ExitCode.OK
    assert "Saved 'warehouse'" in out
    assert str(user_file()) in out

    assert stat.S_IMODE(user_file().stat().st_mode) == 0o600
    assert stat.S_IMODE(user_file().parent.stat().st_mode) == 0o700

    dbname = conninfo_to_dict(url)["dbname"]
    code, out, _ = flow("connections", "list")
    assert code == ExitCode.OK
    (row,) = out.splitlines()[1:]
    assert row.split()[:2] == ["warehouse", "~/.ematix-flow/connections.toml"]
    assert dbname in row.split()

    code, out, _ = flow("connections", "check", "warehouse")
    assert code == ExitCode.OK
    assert out.startswith("OK     warehouse")


def test_set_keeps_other_entries_and_comments() -> None:
    user_file().parent.mkdir(parents=True)
    user_file().write_text(
        "# my connections\n"
        "[connections.oltp]  # the app database\n"
        'dsn = "postgresql://oltp-host/main"\n'
        "\n"
        "[connections.alt-warehouse]\n"
        'dsn = "postgresql://old-host/dw"\n'
        "options = 'kept'\n"
    )
    code, _, _ = flow("connections", "set", "alt_warehouse=postgresql://new-host/dw")
    assert code == ExitCode.OK
    code, _, _ = flow("connections", "set", "archive=host=arch-host dbname=a")
    assert code == ExitCode.OK
    assert user_file().read_text() == (
        "# my connections\n"
        "[connections.oltp]  # the app database\n"
        'dsn = "postgresql://oltp-host/main"\n'
        "\n"
        "[connections.alt-warehouse]\n"
        'dsn = "postgresql://new-host/dw"\n'
        "options = 'kept'\n"
        "\n"
        "[connections.archive]\n"
        'dsn = "host=arch-host dbname=a"\n'
    )
    assert stat.S_IMODE(user_file().stat().st_mode) == 0o600


def test_set_tightens_an_existing_directory_and_file() -> None:
    user_file().parent.mkdir(mode=0o755, parents=True)
    user_file().write_text("")
    user_file().chmod(0o644)
    code, _, _ = flow("connections", "set", "x=postgresql://h/db")
    assert code == ExitCode.OK
    assert stat.S_IMODE(user_file().stat().st_mode) == 0o600
    assert stat.S_IMODE(user_file().parent.stat().st_mode) == 0o700


def test_set_output_and_file_content_are_as_expected() -> None:
    code, out, _ = flow("connections", "set", f"wh={REFUSED_URL}")
    assert code == ExitCode.OK
    assert "postgresql://app:***@127.0.0.1:1/wh" in out
    # The file is the one place the secret is stored, readable by its owner only.
    assert PASSWORD in user_file().read_text()


def test_set_warns_when_a_higher_level_overrides_the_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMATIX_FLOW_DSN_WAREHOUSE", "postgresql://env-host/dw")
    code, out, _ = flow("connections", "set", "warehouse=postgresql://file-host/dw")
    assert code == ExitCode.OK
    assert "env EMATIX_FLOW_DSN_WAREHOUSE also configures 'warehouse'" in out


@pytest.mark.parametrize(
    ("argument", "code", "fragment"),
    [
        ("warehouse", ExitCode.USAGE, "expected NAME=DSN"),
        ("=postgresql://h/db", ExitCode.USAGE, "expected NAME=DSN"),
        ("warehouse=", ExitCode.USAGE, "expected NAME=DSN"),
        ("ware house=postgresql://h/db", ExitCode.CONFIG_ERROR, "invalid connection name"),
        ("wh=mysql://u@h/db", ExitCode.CONFIG_ERROR, "PostgreSQL only"),
        (f"wh=host=h password={PASSWORD} junk", ExitCode.CONFIG_ERROR, "not a valid"),
    ],
)
def test_set_rejects_a_malformed_argument(argument: str, code: int, fragment: str) -> None:
    exit_code, _, err = flow("connections", "set", argument)
    assert exit_code == code
    assert fragment in err
    assert not user_file().exists()


def test_set_refuses_to_overwrite_a_malformed_file() -> None:
    user_file().parent.mkdir(parents=True)
    user_file().write_text("[connections\n")
    code, _, err = flow("connections", "set", "x=postgresql://h/db")
    assert code == ExitCode.CONFIG_ERROR
    assert "line 1" in err
    assert user_file().read_text() == "[connections\n"


def test_set_stores_an_interpolated_dsn_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, _ = flow("connections", "set", "warehouse=${WH_DSN_FOR_SET}")
    assert code == ExitCode.OK
    assert '"${WH_DSN_FOR_SET}"' in user_file().read_text()
    monkeypatch.setenv("WH_DSN_FOR_SET", f"postgresql://u:{PASSWORD}@interp-host/dw")
    code, out, _ = flow("connections", "list")
    assert code == ExitCode.OK
    assert "interp-host" in out


# --------------------------------------------------------------------------- remove


def test_remove_deletes_only_the_saved_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    user_file().parent.mkdir(parents=True)
    user_file().write_text(
        "# my connections\n"
        "[connections.oltp]  # the app database\n"
        'dsn = "postgresql://oltp-host/main"\n'
        "\n"
        "[connections.alt-warehouse]\n"
        f'dsn = "{REFUSED_URL}"\n'
    )
    before = user_file().read_text()
    # without a terminal to ask on, only --yes removes
    code, out, err = flow("connections", "remove", "alt_warehouse")
    assert code == ExitCode.USAGE and "pass --yes" in err and out == ""
    assert user_file().read_text() == before

    code, out, err = flow("connections", "remove", "alt_warehouse", "--yes")
    assert code == ExitCode.OK and err == ""
    assert out.startswith(
        "Removed connection 'alt_warehouse' (postgresql://app:***@127.0.0.1:1/wh)"
    )
    assert user_file().read_text() == before.split("[connections.alt-warehouse]")[0]
    assert stat.S_IMODE(user_file().stat().st_mode) == 0o600

    code, out, err = flow("connections", "remove", "alt_warehouse", "--yes")
    assert code == ExitCode.CONFIG_ERROR and out == ""
    assert err.startswith("error: no connection named 'alt_warehouse' is saved in")

    # configured elsewhere: left alone, and the message says where
    monkeypatch.setenv("EMATIX_FLOW_DSN_OLTP", "postgresql://env-host/main")
    Path(".ematix-flow.toml").write_text('[connections.project-db]\ndsn = "postgresql://h/p"\n')
    code, out, _ = flow("connections", "remove", "oltp", "--yes")
    assert code == ExitCode.OK
    assert "env EMATIX_FLOW_DSN_OLTP still configures 'oltp'" in out
    assert "unset EMATIX_FLOW_DSN_OLTP" in out
    code, _, err = flow("connections", "remove", "project-db", "--yes")
    assert code == ExitCode.CONFIG_ERROR
    assert "is configured by ./.ematix-flow.toml" in err
    assert "delete [connections.project-db] from ./.ematix-flow.toml" in err


def test_remove_asks_first_on_a_terminal() -> None:
    flow("connections", "set", f"scratch={REFUSED_URL}")
    terminal, stdin = os.openpty()
    with subprocess.Popen(
        [str(FLOW_SCRIPT), "connections", "remove", "scratch"],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        os.close(stdin)
        os.write(terminal, b"y\n")
        out, err = proc.communicate(timeout=60)
    os.close(terminal)
    assert proc.returncode == ExitCode.OK, err
    assert out.startswith("Remove connection 'scratch' (postgresql://app:***@127.0.0.1:1/wh) from")
    assert "connections.toml? [y/N]: Removed connection 'scratch'" in out
    assert PASSWORD not in out + err and "scratch" not in user_file().read_text()
