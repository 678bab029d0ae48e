"""Prometheus tools for the monitoring tests: promtool, a real server, scrapes.

* :func:`prometheus_tools` — ``promtool`` and ``prometheus`` from Debian's ``prometheus``
  package, installed by ``scripts/ensure-promtool.sh`` when missing (CI runs as root);
  the test is skipped, saying why, only when that script cannot install them.
* :func:`scrape` — GET an exposition endpoint and parse it with prometheus_client's own
  parser into ``{(sample name, labels): value}``.
* :class:`PrometheusServer` — a real Prometheus on a random 127.0.0.1 port with a
  config of the test's making, for queries over its HTTP API.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ENSURE = REPO_ROOT / "scripts" / "ensure-promtool.sh"
CHART = REPO_ROOT / "charts" / "ematix-flow-operator"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def prometheus_tools() -> tuple[Path, Path]:
    """Paths of ``promtool`` and ``prometheus``, installing them when missing."""
    if not (shutil.which("promtool") and shutil.which("prometheus")):
        done = subprocess.run(["bash", str(ENSURE)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"promtool/prometheus unavailable: {ENSURE.name}: {done.stderr.strip()}")
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    assert promtool and prometheus
    return Path(promtool), Path(prometheus)


def parse(text: str) -> Samples:
    """Every sample of an exposition text, parsed by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(response.read().decode("utf-8"))


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    """The one sample of ``metric`` whose labels include ``labels`` (None when absent)."""
    found = [v for (n, ls), v in samples.items() if n == metric and set(labels.items()) <= ls]
    assert len(found) <= 1, (metric, labels, found)
    return found[0] if found else None


def names(samples: Samples, /, **labels: str) -> set[str]:
    """Sample names that have a series with ``labels``."""
    return {n for (n, ls), _ in samples.items() if set(labels.items()) <= ls}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def promtool(
    *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    tool, _ = prometheus_tools()
    return subprocess.run(
        [str(tool), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=120,
    )


class PrometheusServer:
    """``prometheus`` with ``config`` (and ``rule_files``) on a free 127.0.0.1 port."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        _, self.binary = prometheus_tools()
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        self._proc = subprocess.Popen(
            [
                str(self.binary),
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self._proc.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise AssertionError(f"prometheus did not start: {self.log.read_text()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the JSON answer (errors included, never raised)."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 400/422 carry the error as JSON
            return json.loads(exc.read())
