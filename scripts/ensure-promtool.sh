#!/usr/bin/env bash
# Makes `promtool` and `prometheus` available for the monitoring tests: does nothing when
# both are on PATH, else installs Debian's `prometheus` package (it ships both). Needs root
# (CI runs as root); prints why and exits non-zero when it cannot install.
#
#   bash scripts/ensure-promtool.sh          # idempotent; safe to run before every test run
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-promtool: no apt-get here; install Prometheus 2.x (promtool and prometheus)" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-promtool: installing Debian's prometheus package needs root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# --no-install-recommends: the server and promtool only, no node exporter or web assets.
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package enables and starts a system service where an init system runs; the tests
# start their own server on a random port and need none.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
fi
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1
