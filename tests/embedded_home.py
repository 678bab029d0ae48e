"""Embedded servers started by demo and docs tests live outside pytest's temporary tree.

Run as root, the embedded server opens the data directory's parents to its own user
(o+rx); every new pytest session on the machine resets ``/tmp/pytest-of-<user>`` to
0700, which would cut a running server off its own files. So the per-user data
directory (``$XDG_DATA_HOME/ematix-flow``) is a fresh directory under the system temp
folder for each test, removed afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def xdg_data_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="efxdg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(path))
    yield path
    from ematix_flow._embedded import stop_embedded

    for datadir in [*path.glob("ematix-flow/dev-db/*"), path / "ematix-flow" / "demo" / "pgdata"]:
        if datadir.is_dir():
            stop_embedded(datadir)
    shutil.rmtree(path, ignore_errors=True)
