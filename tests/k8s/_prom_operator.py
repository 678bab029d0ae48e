"""The Prometheus Operator's published schemas, for the chart's ServiceMonitor, PodMonitor
and PrometheusRule.

No PyPI package ships the prometheus-operator CRDs, but the npm package
``@kubernetes-models/prometheus-operator`` carries validators compiled from the schemas of
the ``monitoring.coreos.com`` kinds (generated from the project's API types, as its CRDs
are). :func:`validate_monitoring` installs it once with ``npm install`` into the tools cache
of :mod:`_helm` and runs each object through the validator of its kind with Node.js;
errors come back as ``kind/name: path: message``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from _helm import CACHE_DIR

PACKAGE = "@kubernetes-models/prometheus-operator@6.0.0"
KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
_SCRIPT = """
import { readFileSync } from "node:fs";
const docs = JSON.parse(readFileSync(0, "utf8"));
const errors = [];
for (const doc of docs) {
  const mod = await import(
    `@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${doc.kind}`);
  try {
    new mod[doc.kind](doc).validate();
  } catch (e) {
    errors.push(`${doc.kind}/${doc.metadata?.name}: ${e.message}`);
  }
}
console.log(JSON.stringify(errors));
"""


def ensure_models(cache_dir: Path = CACHE_DIR) -> Path:
    """The folder holding the installed npm package (installed on first use)."""
    home = cache_dir / ("prometheus-operator-models-" + PACKAGE.rsplit("@", 1)[1])
    marker = home / "node_modules" / "@kubernetes-models" / "prometheus-operator"
    if marker.exists():
        return home
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return home
        npm = shutil.which("npm")
        assert npm, "npm is needed to fetch the Prometheus Operator schemas"
        with tempfile.TemporaryDirectory(dir=home) as tmp:
            (Path(tmp) / "package.json").write_text('{"private": true, "type": "module"}')
            subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--silent", PACKAGE],
                cwd=tmp,
                check=True,
                env={**os.environ, "npm_config_update_notifier": "false"},
            )
            (Path(tmp) / "validate.mjs").write_text(_SCRIPT)
            for name in ("package.json", "validate.mjs", "node_modules"):
                os.replace(Path(tmp) / name, home / name)
    return home


def monitoring_errors(docs: list[dict[str, Any]]) -> list[str]:
    """Schema violations of ``docs`` (each of a kind in :data:`KINDS`); empty if valid."""
    assert all(d["apiVersion"] == "monitoring.coreos.com/v1" and d["kind"] in KINDS for d in docs)
    home = ensure_models()
    node = shutil.which("node")
    assert node, "Node.js is needed to run the Prometheus Operator schemas"
    done = subprocess.run(
        [node, "validate.mjs"],
        cwd=home,
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return list(json.loads(done.stdout))
