"""The NATS users of the system and their permissions, derived from `topology.py`: each
service may publish and subscribe to its own subjects only (the notifier cannot publish a
verdict, the gateway cannot publish a status change).

`server_config()` renders the `authorization` block of a nats-server configuration. It names
no password: each is a variable (`$GATEWAY_PASSWORD`, ...) defined in a file of its own that
the configuration includes (`passwords.conf`, a secret), so the permissions can be reviewed,
versioned and checked while the passwords stay secret. The tests, `make run` and deploy/ all
use it: `python -m axiom_shared.nats_permissions` prints the block deploy/ ships.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from axiom_shared.topology import (
    PAYMENT_STATUS_BUCKET,
    SERVICE_GRANTS,
    STREAMS,
    ConsumerSpec,
    NatsGrants,
)

JS_API = "$JS.API"
#: Where nats-py's replies (request/reply answers, JetStream acks and API answers) arrive.
INBOX = "_INBOX.>"
#: The file the rendered configuration includes for the password variables.
PASSWORDS_FILE = "passwords.conf"
USERS: tuple[str, ...] = tuple(grants.user for grants in SERVICE_GRANTS)


def wildcard(template: str) -> str:
    """`payments.events.status.{payment_id}` → `payments.events.status.*`."""
    return re.sub(r"\{[^}]+\}", "*", template)


def _kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def _topology_declaration() -> list[str]:
    """Every service declares the whole topology at start-up (any may start first): create,
    update and look up each stream and the KV bucket, but never delete or purge one."""
    streams = [spec.name for spec in STREAMS] + [_kv_stream(PAYMENT_STATUS_BUCKET)]
    return [
        f"{JS_API}.STREAM.{verb}.{name}"
        for name in streams
        for verb in ("CREATE", "UPDATE", "INFO")
    ]


def _consumer(spec: ConsumerSpec) -> list[str]:
    """Create/update, look up and fetch from its durable consumer, ack its messages, and
    dead-letter them. A fan-out consumer's name ends in the replica id: a NATS token cannot be
    matched by prefix, so that service may name any consumer on the stream it reads."""
    name = "*" if spec.fan_out else spec.durable
    stream = spec.stream
    return [
        f"{JS_API}.CONSUMER.CREATE.{stream}.{name}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{name}.>",
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{name}",
        f"{JS_API}.CONSUMER.INFO.{stream}.{name}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{name}",
        f"$JS.ACK.{stream}.{name}.>",
        spec.dead_letter_subject(),
    ]


def _kv_read(bucket: str) -> list[str]:
    stream = _kv_stream(bucket)
    return [
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
    ]


def permissions(grants: NatsGrants) -> dict[str, object]:
    """The nats-server `permissions` of one user."""
    publish: list[str] = _topology_declaration()
    subscribe: list[str] = [INBOX]
    publish += [wildcard(subject) for subject in grants.publishes]
    publish += list(grants.requests)
    for spec in grants.consumers:
        publish += _consumer(spec)
    for bucket in grants.kv_reads:
        publish += _kv_read(bucket)
    for bucket in grants.kv_writes:
        publish += [*_kv_read(bucket), f"$KV.{bucket}.>"]
    for stream_spec in grants.stream_admin:
        publish += [
            f"{JS_API}.STREAM.MSG.GET.{stream_spec.name}",
            f"{JS_API}.STREAM.MSG.DELETE.{stream_spec.name}",
        ]
    subscribe += list(grants.serves)
    subscribe += [f"$KV.{bucket}.>" for bucket in grants.kv_follows]
    if grants.service:
        # nats.micro's discovery subjects (PING, INFO, STATS: all, by name, by instance).
        subscribe += ["$SRV.PING", "$SRV.INFO", "$SRV.STATS"]
        subscribe += [f"$SRV.*.{grants.service}", f"$SRV.*.{grants.service}.*"]
    result: dict[str, object] = {
        "publish": {"allow": list(dict.fromkeys(publish))},
        "subscribe": {"allow": list(dict.fromkeys(subscribe))},
    }
    if grants.serves or grants.service:
        # Answering a request publishes to the asker's inbox: allowed once per request
        # received, never to _INBOX.> at large (no one can forge another service's answer).
        result["allow_responses"] = True
    return result


def password_variable(user: str) -> str:
    """`amadeus-proxy` → `AMADEUS_PROXY_PASSWORD` (a nats-server configuration variable)."""
    return re.sub(r"[^A-Z0-9]", "_", user.upper()) + "_PASSWORD"


def _value(value: object) -> str:
    return json.dumps(value)


def server_config(*, admin_user: str | None = None, anonymous_is_admin: bool = False) -> str:
    """The `authorization` block (and the `include` of the password variables) of a
    nats-server configuration. `admin_user` adds a user without restrictions (the test
    harness); `anonymous_is_admin` makes connections without a login that user."""
    lines = [
        "# Generated from shared/axiom_shared/topology.py by",
        "# `python -m axiom_shared.nats_permissions`: do not edit by hand.",
        "# One user per service, allowed its own subjects only; the passwords are variables",
        f"# defined in {PASSWORDS_FILE} (a secret, never in this file).",
        f'include "{PASSWORDS_FILE}"',
        "authorization {",
        "  users: [",
    ]
    for grants in SERVICE_GRANTS:
        perms = permissions(grants)
        lines.append(
            f"    {{user: {_value(grants.user)}, password: ${password_variable(grants.user)},"
        )
        lines.append("     permissions: {")
        for key, value in perms.items():
            lines.append(f"       {key}: {_value(value)}")
        lines.append("     }}")
    if admin_user:
        lines.append(
            f"    {{user: {_value(admin_user)}, password: ${password_variable(admin_user)}}}"
        )
    lines.append("  ]")
    lines.append("}")
    if admin_user and anonymous_is_admin:
        lines.append(f"no_auth_user: {_value(admin_user)}")
    return "\n".join(lines) + "\n"


def new_passwords(users: Iterable[str]) -> dict[str, str]:
    return {user: secrets.token_urlsafe(32) for user in users}


def passwords_config(passwords: Mapping[str, str]) -> str:
    """The included file: one variable per user (keep it as secret as the passwords)."""
    return "".join(
        f"{password_variable(user)}: {_value(password)}\n" for user, password in passwords.items()
    )


def write_server_files(
    folder: Path,
    *,
    admin_user: str | None = None,
    anonymous_is_admin: bool = False,
) -> tuple[Path, dict[str, str]]:
    """Write `auth.conf` and `passwords.conf` (and one `<user>.password` file per user, for
    the services' NATS_PASSWORD_FILE) into `folder`, keeping passwords already there; returns
    the configuration to include and the passwords by user."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    users = [*USERS, *([admin_user] if admin_user else [])]
    passwords: dict[str, str] = {}
    for user in users:
        path = folder / f"{user}.password"
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(new_passwords([user])[user])
        passwords[user] = path.read_text().strip()
    secret_file = folder / PASSWORDS_FILE
    secret_file.touch(mode=0o600)
    secret_file.write_text(passwords_config(passwords))
    config = folder / "auth.conf"
    config.write_text(server_config(admin_user=admin_user, anonymous_is_admin=anonymous_is_admin))
    return config, passwords


def main(argv: list[str] | None = None) -> int:
    """Print the authorization block (deploy/nats/auth.conf); with `--write DIR`, also write
    DIR/passwords.conf and DIR/<user>.password, keeping the passwords already there."""
    parser = argparse.ArgumentParser(prog="python -m axiom_shared.nats_permissions")
    parser.add_argument("--write", metavar="DIR", type=Path, help="write the password files")
    args = parser.parse_args(argv)
    if args.write is not None:
        write_server_files(args.write)
    sys.stdout.write(server_config())
    return 0


if __name__ == "__main__":
    sys.exit(main())
