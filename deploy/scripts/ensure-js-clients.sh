#!/usr/bin/env bash
# Install the public Solana JS clients the sandbox's PubSub tests drive (tests/sandbox/js:
# @solana/web3.js and @solana/kit at the versions package-lock.json pins) with `npm ci`, when
# node_modules is missing or was installed from another package.json / package-lock.json.
# Silent when there is nothing to do. Needs Node.js 20.18+ and npm (this machine kind has
# both); otherwise it says what is missing and fails.
set -euo pipefail

JS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tests/sandbox/js"
STAMP="$JS_DIR/node_modules/.installed-from"

fail() {
    echo "ensure-js-clients: $*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 ||
    fail "node is missing: install Node.js 20.18 or newer (e.g. apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 ||
    fail "npm is missing: install it beside node (e.g. apt-get install npm)"
node -e 'const [major, minor] = process.versions.node.split(".").map(Number);
         process.exit(major > 20 || (major === 20 && minor >= 18) ? 0 : 1)' ||
    fail "node $(node --version) is too old: @solana/kit needs 20.18 or newer"

wanted="$(cat "$JS_DIR/package.json" "$JS_DIR/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$wanted" ]]; then
    exit 0
fi

# One install at a time (make test and a pytest session may both get here).
exec 9>"${TMPDIR:-/tmp}/axiom-ensure-js-clients.lock"
flock 9
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$wanted" ]]; then
    exit 0
fi

echo "ensure-js-clients: npm ci in tests/sandbox/js"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
    cat "$log" >&2
    fail "npm ci failed in $JS_DIR"
fi
echo "$wanted" >"$STAMP"
