#!/usr/bin/env bash
# The hash-pinned locks the images install with `pip install --require-hashes`:
# deploy/locks/<service>.txt holds the third-party closure of shared/ and that service (what
# their pyproject.toml files declare, at the versions of constraints.txt) with the sha256 of
# every file of each release; deploy/locks/libsql-client.txt holds libsql-client alone (the
# database owners install it with --no-deps: it declares a Sphinx theme by mistake).
# Run it after changing a dependency or constraints.txt; tests/deploy checks the locks agree
# with constraints.txt and with what each package declares.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PY:-.venv/bin/python}"
COMPILE=("$PY" -m piptools compile --quiet --generate-hashes --allow-unsafe --strip-extras
         --no-emit-index-url --no-emit-find-links --no-header --annotation-style=line
         -c constraints.txt)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
declared() {  # the third-party requirements of the given pyproject.toml files
    "$PY" - "$@" <<'PYTHON'
import sys, tomllib
for path in sys.argv[1:]:
    with open(path, "rb") as fh:
        for req in tomllib.load(fh)["project"]["dependencies"]:
            if not req.startswith("axiom-"):
                print(req)
PYTHON
}
for service in gateway payments verifier notifier amadeus-proxy; do
    declared shared/pyproject.toml "services/$service/pyproject.toml" > "$work/$service.in"
    "${COMPILE[@]}" -o "deploy/locks/$service.txt" "$work/$service.in"
    echo "deploy/locks/$service.txt"
done
echo "libsql-client" > "$work/libsql-client.in"
"${COMPILE[@]}" -o "$work/libsql-client.txt" "$work/libsql-client.in"
# Its own entry only (with its hashes): the image installs it with --no-deps.
awk '/^libsql-client==/{keep=1; print; next} keep && /^    --hash/{print; next} {keep=0}' \
    "$work/libsql-client.txt" > deploy/locks/libsql-client.txt
echo "deploy/locks/libsql-client.txt"
echo "setuptools>=68" > "$work/build.in"
"${COMPILE[@]}" -o deploy/locks/build.txt "$work/build.in"
echo "deploy/locks/build.txt"
