#!/usr/bin/env bash
# Make `promtool` (Prometheus's rule checker, from Debian's `prometheus` package) available for
# tests/deploy/test_prometheus_rules.py. Does nothing when it is already on PATH. Installs only
# as root (CI and the dev machines run as root); otherwise it says what to run and fails.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if [[ "$(id -u)" != "0" ]]; then
    echo "ensure-promtool: promtool is not on PATH and we are not root;" \
         "run: sudo apt-get install -y --no-install-recommends prometheus" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-promtool: promtool is missing and apt-get is not available here" >&2
    exit 1
fi

echo "ensure-promtool: installing Debian's prometheus package (for promtool)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package enables and starts a prometheus daemon where an init system runs; promtool is all
# the tests need, so nothing else is started by this script.
command -v promtool >/dev/null 2>&1 || {
    echo "ensure-promtool: prometheus installed but promtool is still not on PATH" >&2
    exit 1
}
promtool --version 2>&1 | head -n 1
