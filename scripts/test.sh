#!/usr/bin/env bash
# Installs the project with its test dependencies into .venv and runs every check:
# ruff (lint + format), the import-layer contracts, and the pytest suite on real
# PostgreSQL servers of every supported version (scripts/pg_versions.py): the whole suite
# on 18, the database tests on 14, 15, 16 and 17, each server set up as production ones
# are (scram-sha-256 password auth over TCP on a port of its own, a role that is not a
# superuser). Exits non-zero when any check or any version fails.
#
#   bash scripts/test.sh                        # everything: what .ci/run runs
#   EMATIX_FLOW_PG_MATRIX=0 bash scripts/test.sh   # the whole suite once, on the
#                                               # embedded PostgreSQL 18 (no matrix)
#   bash scripts/test.sh tests/engine -x        # the checks, then pytest with these
#                                               # arguments once (embedded PostgreSQL 18)
#   EMATIX_FLOW_TEST_DSN=postgresql://… bash scripts/test.sh   # the whole suite, once,
#                                               # on that server instead
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
echo "install: $((SECONDS - started)) s"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
# promtool and Prometheus (Debian's prometheus package) for the alert-rule tests
bash scripts/ensure-promtool.sh
if [ "$#" -gt 0 ] || [ -n "${EMATIX_FLOW_TEST_DSN:-}" ]; then
    exec .venv/bin/python -m pytest "$@"
fi
if [ "${EMATIX_FLOW_PG_MATRIX:-1}" = "0" ]; then
    # the whole suite on the embedded PostgreSQL 18
    .venv/bin/python -m pytest
else
    # every supported version on servers set up as production ones (scripts/pg_versions.py)
    .venv/bin/python scripts/pg_versions.py ci
fi
echo "scripts/test.sh took $((SECONDS - started)) s"
