#!/usr/bin/env bash
# The secret files deploy/compose.yaml mounts (`secrets:`), in deploy/secrets/ (git-ignored,
# mode 0600): NATS passwords (one per service) and the Redis password are generated once and
# kept; every other secret starts as an empty file (empty = not set) for you to fill in.
# Nothing secret goes into an environment variable: the services read <NAME>_FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-../.venv/bin/python}"
# Files readable in the containers (non-root users; compose bind-mounts them), the folder
# closed to everyone but you on this host.
umask 022
mkdir -p secrets/nats
chmod 700 secrets
"$PYTHON" -m axiom_shared.nats_permissions --write secrets/nats >/dev/null
if [[ ! -s secrets/redis-password ]]; then
    "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))' > secrets/redis-password
fi
# Redis's ACL file: the default user, with that password (the file is the secret).
printf 'user default on >%s ~* &* +@all\n' "$(cat secrets/redis-password)" > secrets/redis-users.acl
for name in helius-webhook-secret helius-webhook-secret-next paymob-hmac-secret \
            paymob-hmac-secret-next admin-token admin-token-next solana-private-key \
            turso-db-auth-token bookings-db-auth-token amadeus-client-id amadeus-client-secret; do
    [[ -e "secrets/$name" ]] || : > "secrets/$name"
done
echo "deploy/secrets/ is ready; fill in the empty files your deployment needs"
