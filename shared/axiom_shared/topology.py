"""Every NATS subject, JetStream stream, consumer and KV bucket of the system, in one place.

Any service may start first, so each one declares the whole topology at start-up; declaring is
idempotent (create, or update to this config). Streams are file-backed: a fact published here
survives a NATS restart. The replica count is a setting (1 locally, 3 in a cluster).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError

from axiom_shared.logging import get_logger

log = get_logger(__name__)

DAY = 24 * 3600.0

# --- request/reply (core NATS, served on queue groups) -------------------------------------
PAYMENTS_CREATE = "payments.create"
PAYMENTS_GET = "payments.get"
PAYMENTS_CATALOG = "payments.catalog"
PAYMENTS_MATCH = "payments.match"
PAYMENTS_REFUND_REQUEST = "payments.refunds.request"
PAYMENTS_REFUND_GET = "payments.refunds.get"
AMADEUS_SEARCH = "amadeus.search"
AMADEUS_BOOK = "amadeus.book"

# --- JetStream subjects -------------------------------------------------------------------
#: `payments.events.status.<payment_id>`: every status change (PaymentStatusChanged).
PAYMENT_STATUS_SUBJECT = "payments.events.status.{payment_id}"
PAYMENT_STATUS_ALL = "payments.events.status.>"
#: `payments.events.provisioned.<payment_id>`: fulfilment done (PaymentProvisioned).
PAYMENT_PROVISIONED_SUBJECT = "payments.events.provisioned.{payment_id}"
#: `webhooks.helius.<signature>`: one Helius webhook item, stored before the 2xx
#: (Nats-Msg-Id `helius:<signature>`: a redelivered webhook is stored once).
HELIUS_ITEM_SUBJECT = "webhooks.helius.{signature}"
#: `webhooks.paymob.<transaction id>`: one authentic Paymob callback (PaymobTransactionReceived),
#: stored before the 2xx (Nats-Msg-Id `paymob:<transaction id>:<state>`).
PAYMOB_TRANSACTION_SUBJECT = "webhooks.paymob.{transaction_id}"
PAYMOB_TRANSACTION_ALL = "webhooks.paymob.>"
#: `verify.candidates.<source>.<payment_id>`: manual and reconcile hints (VerificationRequested).
VERIFY_CANDIDATE_SUBJECT = "verify.candidates.{source}.{payment_id}"
#: `verify.findings.<payment_id>`: what the verifier read on chain (PaymentFindings: receipts
#: and observations), for payments.
FINDINGS_SUBJECT = "verify.findings.{payment_id}"
#: `verify.seen.<payment_id>`: a transaction carrying the reference reached `confirmed`
#: (PaymentSeen; display only), for payments (Nats-Msg-Id `seen:<payment_id>:<signature>`).
SEEN_SUBJECT = "verify.seen.{payment_id}"
#: `dlq.<stream>.<consumer>`: messages a consumer gave up on, with the reason in headers.
DEAD_LETTER_SUBJECT = "dlq.{stream}.{consumer}"

# --- KV -----------------------------------------------------------------------------------
#: Latest PaymentStatusChanged per payment, for late SSE clients and polling.
PAYMENT_STATUS_BUCKET = "payment_status"
#: The stream behind the bucket (JetStream names a KV bucket's stream `KV_<bucket>`).
PAYMENT_STATUS_STREAM = f"KV_{PAYMENT_STATUS_BUCKET}"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age: float
    duplicate_window: float = 120.0
    retention: js_api.RetentionPolicy = js_api.RetentionPolicy.LIMITS
    description: str = ""

    def config(self, replicas: int) -> js_api.StreamConfig:
        return js_api.StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=self.retention,
            storage=js_api.StorageType.FILE,
            max_age=self.max_age,
            duplicate_window=self.duplicate_window,
            num_replicas=replicas,
            discard=js_api.DiscardPolicy.OLD,
        )


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer. `fan_out` consumers get a per-replica name and expire when the
    replica is gone (every replica sees every message); the others are shared work queues."""

    stream: str
    durable: str
    filter_subject: str
    max_deliver: int = 8
    ack_wait: float = 30.0
    #: Delay before each redelivery after a failure (by attempt; the last one repeats).
    retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
    max_ack_pending: int = 1000
    fan_out: bool = False
    deliver_new_only: bool = False
    inactive_threshold: float = 300.0

    def consumer_name(self, replica_id: str | None = None) -> str:
        if self.fan_out:
            if not replica_id:
                raise ValueError("a fan-out consumer needs a replica id")
            return f"{self.durable}-{replica_id}"
        return self.durable

    def config(self, replica_id: str | None = None) -> js_api.ConsumerConfig:
        name = self.consumer_name(replica_id)
        return js_api.ConsumerConfig(
            name=name,
            durable_name=name,
            filter_subject=self.filter_subject,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=(
                js_api.DeliverPolicy.NEW if self.deliver_new_only else js_api.DeliverPolicy.ALL
            ),
            ack_wait=self.ack_wait,
            # One more than we use: the consumer loop dead-letters on the last delivery itself.
            max_deliver=self.max_deliver + 1,
            max_ack_pending=self.max_ack_pending,
            inactive_threshold=self.inactive_threshold if self.fan_out else None,
        )

    def dead_letter_subject(self) -> str:
        return DEAD_LETTER_SUBJECT.format(stream=self.stream, consumer=self.durable)


PAYMENT_EVENTS = StreamSpec(
    name="PAYMENT_EVENTS",
    subjects=("payments.events.>",),
    max_age=30 * DAY,
    duplicate_window=600.0,
    description="payment status changes and provisioning facts",
)
DEAD_LETTERS = StreamSpec(
    name="DEAD_LETTERS",
    subjects=("dlq.>",),
    max_age=30 * DAY,
    duplicate_window=600.0,
    description="messages a consumer gave up on, kept for inspection and replay",
)

WEBHOOKS = StreamSpec(
    name="WEBHOOKS",
    subjects=("webhooks.>",),
    max_age=7 * DAY,
    # Helius retries over seconds to minutes: a redelivery inside this window is dropped.
    duplicate_window=3600.0,
    description="webhook items from Helius and Paymob, stored before they are answered",
)
VERIFICATION = StreamSpec(
    name="VERIFICATION",
    subjects=("verify.>",),
    max_age=7 * DAY,
    duplicate_window=600.0,
    description="candidates to verify on chain, and the verifier's findings",
)

STREAMS: tuple[StreamSpec, ...] = (PAYMENT_EVENTS, WEBHOOKS, VERIFICATION, DEAD_LETTERS)

#: Redeliveries of work that waits on the chain: together they outlast a transaction's way from
#: `confirmed` to `finalized` (~13 s on mainnet); the reconcile loop covers anything longer.
CHAIN_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)

#: Verifier replicas share these work queues.
VERIFIER_CANDIDATES = ConsumerSpec(
    stream=VERIFICATION.name,
    durable="verifier-candidates",
    filter_subject="verify.candidates.>",
    max_deliver=10,
    ack_wait=30.0,
    retry_delays=CHAIN_RETRY_DELAYS,
)
VERIFIER_WEBHOOKS = ConsumerSpec(
    stream=WEBHOOKS.name,
    durable="verifier-helius",
    filter_subject="webhooks.helius.>",
    max_deliver=10,
    ack_wait=30.0,
    retry_delays=CHAIN_RETRY_DELAYS,
)
#: Payments replicas share the findings; each is applied by conditional UPDATEs.
PAYMENTS_FINDINGS = ConsumerSpec(
    stream=VERIFICATION.name,
    durable="payments-findings",
    filter_subject="verify.findings.>",
    max_deliver=10,
    ack_wait=30.0,
)

#: Payments replicas share the seen markers (display only; a lost one costs a second of news).
PAYMENTS_SEEN = ConsumerSpec(
    stream=VERIFICATION.name,
    durable="payments-seen",
    filter_subject="verify.seen.>",
    max_deliver=5,
    ack_wait=10.0,
    retry_delays=(0.2, 0.5, 1.0, 2.0),
)
#: The amadeus-proxy (owner of the bookings DB) applies Paymob callbacks; replicas share them.
AMADEUS_PAYMOB_CALLBACKS = ConsumerSpec(
    stream=WEBHOOKS.name,
    durable="amadeus-proxy-paymob",
    filter_subject=PAYMOB_TRANSACTION_ALL,
    max_deliver=10,
    ack_wait=30.0,
)

#: Each notifier replica reads every status change (no shared queue).
NOTIFIER_STATUS_FEED = ConsumerSpec(
    stream=PAYMENT_EVENTS.name,
    durable="notifier-status",
    filter_subject=PAYMENT_STATUS_ALL,
    fan_out=True,
    deliver_new_only=True,
    max_deliver=3,
    ack_wait=10.0,
)


async def ensure_topology(nc: NATS, js: JetStreamContext, replicas: int = 1) -> None:
    """Create or update every stream and KV bucket (idempotent)."""
    for spec in STREAMS:
        config = spec.config(replicas)
        try:
            await js.add_stream(config)
        except BadRequestError:
            # Exists with another config: bring it to this one.
            await js.update_stream(config)
    # Direct gets (`$JS.API.DIRECT.GET`: no JSON or base64 round, answered by any replica) on
    # a single replica only: there they are the leader's reads, at half the NATS and a quarter
    # less gateway CPU per check-status. With followers, a direct get may be answered by one
    # that has not applied the newest write yet (NATS promises no read-your-writes for them),
    # and check-status must never be staler than a status event already sent; so a clustered
    # bucket is read through its leader.
    direct = replicas == 1
    try:
        await js.key_value(PAYMENT_STATUS_BUCKET)
    except BucketNotFoundError:
        await js.create_key_value(
            bucket=PAYMENT_STATUS_BUCKET,
            history=1,
            ttl=30 * DAY,
            replicas=replicas,
            storage=js_api.StorageType.FILE,
            description="latest status per payment",
            direct=direct,
        )
        return
    stream = await js.stream_info(PAYMENT_STATUS_STREAM)
    if bool(stream.config.allow_direct) != direct:
        await js.update_stream(replace(stream.config, allow_direct=direct))


async def ensure_consumer(
    nc: NATS, js: JetStreamContext, spec: ConsumerSpec, replica_id: str | None = None
) -> str:
    """Create the consumer, or update it in place when its config changed; returns its name."""
    config = spec.config(replica_id)
    name = spec.consumer_name(replica_id)
    try:
        await js.add_consumer(spec.stream, config)
    except BadRequestError:
        # nats-py has no update call: the server's create API updates with action=update.
        request = {"stream_name": spec.stream, "config": config.as_dict(), "action": "update"}
        subject = f"$JS.API.CONSUMER.CREATE.{spec.stream}.{name}.{spec.filter_subject}"
        reply = await nc.request(subject, json.dumps(request).encode(), timeout=5)
        answer = json.loads(reply.data)
        if "error" in answer:
            raise NotFoundError(description=str(answer["error"])) from None
    return name


# --- who may do what (one NATS user per service, `nats_permissions.py`) --------------------


@dataclass(frozen=True)
class NatsGrants:
    """What one service does on NATS. Its NATS user is allowed exactly this (plus replies to
    what it asks and declaring the topology above): the permissions are derived from here, so
    a subject a service starts using must be added here, where the tests check it."""

    user: str
    #: JetStream subjects it stores facts on (templates as above; `{...}` is one token).
    publishes: tuple[str, ...] = ()
    #: Request/reply subjects it asks.
    requests: tuple[str, ...] = ()
    #: Request/reply subjects it answers (a `nats.micro` service named `service`).
    serves: tuple[str, ...] = ()
    service: str | None = None
    #: Durable consumers it reads (and dead-letters from).
    consumers: tuple[ConsumerSpec, ...] = ()
    #: KV buckets it reads, and those it writes.
    kv_reads: tuple[str, ...] = ()
    kv_writes: tuple[str, ...] = ()
    #: KV buckets whose writes it receives as they are published (a core subscription).
    kv_follows: tuple[str, ...] = ()
    #: Streams whose stored messages it may read and delete one by one (the operator's tool).
    stream_admin: tuple[StreamSpec, ...] = ()


GATEWAY_GRANTS = NatsGrants(
    user="gateway",
    publishes=(HELIUS_ITEM_SUBJECT, PAYMOB_TRANSACTION_SUBJECT, VERIFY_CANDIDATE_SUBJECT),
    requests=(
        PAYMENTS_CREATE,
        PAYMENTS_GET,
        PAYMENTS_CATALOG,
        PAYMENTS_REFUND_GET,
        AMADEUS_SEARCH,
        AMADEUS_BOOK,
    ),
    # check-status reads a payment's latest status from the bucket, and follows the writes
    # of the payments it was asked for (`LatestStatus`).
    kv_reads=(PAYMENT_STATUS_BUCKET,),
    kv_follows=(PAYMENT_STATUS_BUCKET,),
)
PAYMENTS_GRANTS = NatsGrants(
    user="payments",
    publishes=(PAYMENT_STATUS_SUBJECT, PAYMENT_PROVISIONED_SUBJECT, VERIFY_CANDIDATE_SUBJECT),
    serves=(
        PAYMENTS_CREATE,
        PAYMENTS_GET,
        PAYMENTS_CATALOG,
        PAYMENTS_MATCH,
        PAYMENTS_REFUND_REQUEST,
        PAYMENTS_REFUND_GET,
    ),
    service="payments",
    consumers=(PAYMENTS_FINDINGS, PAYMENTS_SEEN),
    kv_writes=(PAYMENT_STATUS_BUCKET,),
)
VERIFIER_GRANTS = NatsGrants(
    user="verifier",
    publishes=(FINDINGS_SUBJECT, SEEN_SUBJECT),
    requests=(PAYMENTS_MATCH, PAYMENTS_GET),
    consumers=(VERIFIER_CANDIDATES, VERIFIER_WEBHOOKS),
)
NOTIFIER_GRANTS = NatsGrants(
    user="notifier",
    requests=(PAYMENTS_GET,),
    consumers=(NOTIFIER_STATUS_FEED,),
    kv_reads=(PAYMENT_STATUS_BUCKET,),
)
AMADEUS_PROXY_GRANTS = NatsGrants(
    user="amadeus-proxy",
    serves=(AMADEUS_SEARCH, AMADEUS_BOOK),
    service="amadeus-proxy",
    consumers=(AMADEUS_PAYMOB_CALLBACKS,),
)
#: `axiom-ops` acts as payments does (its commands go through the same lifecycle and outbox),
#: and reads, replays (to the subject it came from) and deletes dead letters.
OPS_GRANTS = NatsGrants(
    user="axiom-ops",
    publishes=(
        *PAYMENTS_GRANTS.publishes,
        *(subject for spec in STREAMS if spec is not DEAD_LETTERS for subject in spec.subjects),
    ),
    # Refunds are asked for and shown through the payments service.
    requests=(PAYMENTS_REFUND_REQUEST, PAYMENTS_REFUND_GET),
    kv_writes=(PAYMENT_STATUS_BUCKET,),
    stream_admin=(DEAD_LETTERS,),
)

SERVICE_GRANTS: tuple[NatsGrants, ...] = (
    GATEWAY_GRANTS,
    PAYMENTS_GRANTS,
    VERIFIER_GRANTS,
    NOTIFIER_GRANTS,
    AMADEUS_PROXY_GRANTS,
    OPS_GRANTS,
)
