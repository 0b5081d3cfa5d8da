#!/usr/bin/env bash
# Make Debian's Chromium available for the browser tests (tests/browser, marker `browser`): they
# drive it through Playwright with `executable_path`, because Playwright's own browser download
# (`playwright install`) cannot be used here. Does nothing when it is already installed.
# Installs only as root (CI and the dev machines run as root); otherwise it says what to run.
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [[ -x "$CHROMIUM" ]]; then
    exit 0
fi

if [[ "$(id -u)" != "0" ]]; then
    echo "ensure-chromium: $CHROMIUM is missing and we are not root;" \
         "run: sudo apt-get install -y --no-install-recommends chromium" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: $CHROMIUM is missing and apt-get is not available here" >&2
    exit 1
fi

echo "ensure-chromium: installing Debian's chromium package"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
[[ -x "$CHROMIUM" ]] || {
    echo "ensure-chromium: chromium installed but $CHROMIUM is still missing" >&2
    exit 1
}
"$CHROMIUM" --version 2>&1 | head -n 1
