"""Least privilege on NATS, against a real nats-server started with the generated
configuration (`axiom_shared.nats_permissions`): each service's user may publish and
subscribe to its own subjects and is refused everyone else's (the notifier cannot publish a
verdict, the gateway cannot publish a status change, no service can answer in another's
name), and a wrong password is refused. That every service does its own work under these
permissions is what the connected and e2e suites show: they all run on such a server."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from axiom_shared.nats_permissions import permissions, server_config
from axiom_shared.topology import (
    FINDINGS_SUBJECT,
    HELIUS_ITEM_SUBJECT,
    PAYMENT_PROVISIONED_SUBJECT,
    PAYMENT_STATUS_SUBJECT,
    PAYMENTS_CREATE,
    PAYMENTS_GET,
    PAYMENTS_MATCH,
    PAYMOB_TRANSACTION_SUBJECT,
    SERVICE_GRANTS,
    VERIFY_CANDIDATE_SUBJECT,
)
from sandbox.infra import NatsServer

pytestmark = pytest.mark.connected

PAYMENT = "pay_" + "a" * 16


def concrete(template: str) -> str:
    """A subject matching `template` (`{...}` and `>` filled in)."""
    return re.sub(r"\{[^}]+\}", "t" + uuid.uuid4().hex[:8], template).replace(">", "test")


#: (user, a subject it does not own): each must be refused publishing there.
NOT_THEIRS = [
    ("notifier", FINDINGS_SUBJECT.format(payment_id=PAYMENT)),
    ("notifier", PAYMENT_STATUS_SUBJECT.format(payment_id=PAYMENT)),
    ("gateway", PAYMENT_STATUS_SUBJECT.format(payment_id=PAYMENT)),
    ("gateway", FINDINGS_SUBJECT.format(payment_id=PAYMENT)),
    ("gateway", PAYMENTS_MATCH),
    ("verifier", PAYMENT_PROVISIONED_SUBJECT.format(payment_id=PAYMENT)),
    ("verifier", HELIUS_ITEM_SUBJECT.format(signature="sig")),
    ("verifier", PAYMENTS_CREATE),
    ("amadeus-proxy", PAYMENT_STATUS_SUBJECT.format(payment_id=PAYMENT)),
    ("amadeus-proxy", PAYMOB_TRANSACTION_SUBJECT.format(transaction_id="1")),
    ("amadeus-proxy", VERIFY_CANDIDATE_SUBJECT.format(source="manual", payment_id=PAYMENT)),
    ("payments", FINDINGS_SUBJECT.format(payment_id=PAYMENT)),
    ("payments", HELIUS_ITEM_SUBJECT.format(signature="sig")),
    # Nobody answers in another's name, nor deletes a stream or reads the dead letters.
    ("notifier", f"_INBOX.{uuid.uuid4().hex}"),
    ("gateway", "$JS.API.STREAM.DELETE.PAYMENT_EVENTS"),
    ("payments", "$JS.API.STREAM.PURGE.WEBHOOKS"),
    ("notifier", "$JS.API.STREAM.MSG.GET.DEAD_LETTERS"),
    ("gateway", "$KV.payment_status." + PAYMENT),
]

#: (user, a subject it may not subscribe to).
NOT_THEIRS_TO_READ = [
    ("notifier", "payments.events.>"),
    ("gateway", PAYMENTS_CREATE),
    ("verifier", "webhooks.>"),
    ("amadeus-proxy", PAYMENTS_GET),
]


@pytest.fixture(scope="module")
def secured_nats(nats_server: NatsServer) -> NatsServer:
    assert nats_server.secured
    return nats_server


class Login:
    def __init__(self, nc: NATS, errors: list[Exception]) -> None:
        self.nc = nc
        self.errors = errors

    async def refused(self, what: str, timeout: float = 3.0) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            # nats-py lowercases the server's message.
            said = [str(e).lower() for e in self.errors]
            if any("permissions violation" in e and what.lower() in e for e in said):
                return True
            await asyncio.sleep(0.02)
        return False


@pytest.fixture
async def login(secured_nats: NatsServer) -> AsyncIterator[object]:
    opened: list[NATS] = []

    async def connect(user: str) -> Login:
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        nc = await nats.connect(
            secured_nats.url,
            user=user,
            password=secured_nats.passwords[user],
            error_cb=on_error,
            allow_reconnect=False,
        )
        opened.append(nc)
        return Login(nc, errors)

    yield connect
    for nc in opened:
        await nc.close()


@pytest.mark.parametrize(("user", "subject"), NOT_THEIRS)
async def test_a_service_is_refused_a_subject_it_does_not_own(
    login: object, user: str, subject: str
) -> None:
    assert callable(login)
    client: Login = await login(user)
    await client.nc.publish(subject, b"{}")
    await client.nc.flush()
    assert await client.refused(f'publish to "{subject}"'), client.errors


@pytest.mark.parametrize(("user", "subject"), NOT_THEIRS_TO_READ)
async def test_a_service_cannot_listen_to_what_is_not_its_own(
    login: object, user: str, subject: str
) -> None:
    assert callable(login)
    client: Login = await login(user)
    await client.nc.subscribe(subject)
    await client.nc.flush()
    assert await client.refused(f'subscription to "{subject}"'), client.errors


async def test_each_service_may_publish_what_it_owns(login: object, nats_client: NATS) -> None:
    """Its own event subjects (stored by JetStream: the answer comes back to its inbox); the
    streams exist (`nats_client` declared them)."""
    assert callable(login)
    assert nats_client.is_connected
    for grants in SERVICE_GRANTS:
        client: Login = await login(grants.user)
        js = client.nc.jetstream()
        for template in grants.publishes:
            subject = concrete(template)
            ack = await js.publish(subject, b"{}", headers={"Nats-Msg-Id": uuid.uuid4().hex})
            assert ack.seq > 0, (grants.user, subject)
        assert client.errors == [], (grants.user, client.errors)


async def test_a_wrong_password_is_refused(secured_nats: NatsServer) -> None:
    nc = NATS()
    try:
        with pytest.raises((NatsError, OSError)):
            await nc.connect(
                secured_nats.url,
                user="payments",
                password="not-the-password",
                allow_reconnect=False,
                max_reconnect_attempts=1,
                connect_timeout=2,
            )
    finally:
        await nc.close()


def test_no_password_is_in_the_generated_configuration(secured_nats: NatsServer) -> None:
    text = server_config()
    for password in secured_nats.passwords.values():
        assert password not in text
    # Only responders may answer, and only to requests they received.
    assert all(
        "allow_responses" not in permissions(g) or g.serves or g.service for g in SERVICE_GRANTS
    )
