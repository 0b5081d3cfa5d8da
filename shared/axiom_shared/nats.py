"""The one NATS helper: connect, publish events, request/reply, serve, and consume JetStream.

- `wait_for_nats` tries to connect with a growing pause ("waiting for NATS at host:port"),
  for ever or up to a deadline; `connect_nats` waits so, then reconnects forever after that.
- `publish_event` puts a versioned message on JetStream with the correlation id in headers and
  an optional `Nats-Msg-Id` (JetStream drops a second copy inside the duplicate window).
- `request` / `serve` are request/reply over core NATS; `serve` runs a `nats.micro` service,
  whose endpoints sit on a queue group so replicas share the load. Errors travel in the one
  error format (`axiom_shared.errors`) with the HTTP status as the micro error code, and the
  error's HTTP headers (e.g. `Retry-After`) as `Axiom-Http-*` reply headers. With `InFlight`,
  a replica handles several requests at once (nats-py runs one callback at a time).
- `JetStreamConsumer` is the durable pull-consumer loop: explicit ack after the work is done,
  redelivery with backoff on failure, a dead-letter subject for poison messages, and a
  graceful stop that finishes what is in flight and acks nothing it has not done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlparse

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NotFoundError, ServiceUnavailableError
from nats.micro import add_service
from nats.micro.request import ERROR_CODE_HEADER, Request
from nats.micro.service import EndpointConfig, Service, ServiceConfig
from pydantic import ValidationError

from axiom_shared.errors import ApiError, ErrorBody, validation_error
from axiom_shared.logging import (
    CORRELATION_HEADER,
    bind_correlation_id,
    correlation_headers,
    get_logger,
    unbind_correlation_id,
)
from axiom_shared.metrics import DEAD_LETTERS, JS_REDELIVERIES, NATS_REQUESTS
from axiom_shared.schemas.base import Message
from axiom_shared.topology import ConsumerSpec, ensure_consumer
from axiom_shared.wire import (
    DEAD_LETTER_REASON_HEADER,
    DELIVERIES_HEADER,
    ORIGINAL_SEQUENCE_HEADER,
    ORIGINAL_STREAM_HEADER,
    ORIGINAL_SUBJECT_HEADER,
)

log = get_logger(__name__)

M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Message)

MSG_ID_HEADER = "Nats-Msg-Id"


class NatsUnavailable(Exception):
    """NATS did not accept a connection within the time given (the message says where)."""


def nats_address(url: str) -> str:
    """`host:port` of a NATS URL: never its `user:password@` part, which must not be logged."""
    parsed = urlparse(url if "://" in url else f"nats://{url}")
    return f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 4222}"


def _tls_context(url: str, tls_ca_file: str | None) -> ssl.SSLContext | None:
    if tls_ca_file or url.startswith("tls://"):
        return ssl.create_default_context(cafile=tls_ca_file)
    return None


async def wait_for_nats(
    url: str,
    *,
    connect_timeout: float = 2.0,
    user: str | None = None,
    password: str | None = None,
    tls_ca_file: str | None = None,
    give_up_after: float | None = None,
    first_pause: float = 0.5,
    max_pause: float = 10.0,
) -> None:
    """Return once NATS accepts a connection with these credentials (the trial connection is
    closed again). Each failure logs "waiting for NATS at host:port" and the pause doubles, up
    to `max_pause`; past `give_up_after` seconds, `NatsUnavailable`."""
    loop = asyncio.get_running_loop()
    deadline = None if give_up_after is None else loop.time() + give_up_after
    where = nats_address(url)
    pause = first_pause
    failures: list[Exception] = []

    async def failed(exc: Exception) -> None:
        failures.append(exc)

    while True:
        budget = connect_timeout
        if deadline is not None:
            # nats-py tries a server twice before it gives up on it (below).
            budget = min(budget, max((deadline - loop.time()) / 2, 0.05))
        timing: dict[str, Any] = {"connect_timeout": budget, "reconnect_time_wait": 0.05}
        failures.clear()
        trial = NATS()
        try:
            # max_reconnect_attempts=1: nats-py's server selection would retry a refused
            # server for ever with 0, and says "no servers" after its second failure with 1.
            await trial.connect(
                servers=[url],
                name="wait-for-nats",
                allow_reconnect=False,
                max_reconnect_attempts=1,
                error_cb=failed,
                user=user,
                password=password,
                tls=_tls_context(url, tls_ca_file),
                **timing,
            )
        except Exception as exc:
            reason = _reason(failures[-1] if failures else exc)
        else:
            return
        finally:
            # Also after a failure: a refused login leaves its socket open otherwise.
            with contextlib.suppress(Exception):
                await trial.close()
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            raise NatsUnavailable(
                f"NATS at {where} did not accept a connection within {give_up_after:g} s ({reason})"
            )
        log.warning(f"waiting for NATS at {where}", retry_in=pause, error=reason)
        await asyncio.sleep(pause if left is None else min(pause, left))
        pause = min(pause * 2, max_pause)


def _reason(exc: Exception) -> str:
    """What went wrong, briefly, without anything a URL carried (nats-py's messages do not
    include credentials; the class name is enough for a refused or timed-out socket)."""
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


#: Per connection, the subjects the server refused it a subscription to (lower case, as
#: nats-py reports them): a refused subscription receives nothing, silently.
_refused_subscriptions: weakref.WeakKeyDictionary[NATS, set[str]] = weakref.WeakKeyDictionary()
_REFUSED_SUBSCRIPTION = "permissions violation for subscription to "


def subscription_refused(nc: NATS, subject: str) -> bool:
    """Whether the server has refused `nc` a subscription to `subject` (its permissions do
    not allow it). The refusal arrives before the answer to a request made after the
    subscription. Not necessarily before a `flush()`'s PONG: nats-py writes the PING at once,
    ahead of the SUB still queued for its flusher."""
    return subject.lower() in _refused_subscriptions.get(nc, ())


async def connect_nats(
    url: str,
    name: str,
    *,
    connect_timeout: float = 2.0,
    reconnect_wait: float = 0.5,
    user: str | None = None,
    password: str | None = None,
    tls_ca_file: str | None = None,
    give_up_after: float | None = None,
) -> NATS:
    """Wait for NATS (`wait_for_nats`, for ever unless `give_up_after`), connect, then
    reconnect forever on loss.

    Credentials and TLS are configuration: the service's NATS user and its password (read from
    NATS_PASSWORD_FILE), `tls://` URLs verified against the system CAs or NATS_TLS_CA_FILE.
    """
    await wait_for_nats(
        url,
        connect_timeout=connect_timeout,
        user=user,
        password=password,
        tls_ca_file=tls_ca_file,
        give_up_after=give_up_after,
    )

    refused: set[str] = set()

    async def on_error(exc: Exception) -> None:
        detail = str(exc)
        log.warning("nats error", error=type(exc).__name__, detail=detail[:200])
        if (at := detail.lower().find(_REFUSED_SUBSCRIPTION)) >= 0:
            subject = detail[at + len(_REFUSED_SUBSCRIPTION) :].strip().strip("'\"").lower()
            refused.add(subject)

    async def on_disconnected() -> None:
        log.warning("nats disconnected")

    async def on_reconnected() -> None:
        log.info("nats reconnected")

    # nats-py annotates these two as int; it uses them as seconds and takes fractions.
    timing: dict[str, Any] = {
        "connect_timeout": connect_timeout,
        "reconnect_time_wait": reconnect_wait,
    }
    nc: NATS = await nats.connect(
        servers=[url],
        name=name,
        **timing,
        max_reconnect_attempts=-1,
        allow_reconnect=True,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        ping_interval=5,
        max_outstanding_pings=2,
        user=user,
        password=password,
        tls=_tls_context(url, tls_ca_file),
    )
    _refused_subscriptions[nc] = refused
    # Host and port only: the URL's user:password@ (NATS credentials) must never be logged.
    where = nc.connected_url
    log.info("nats connected", server=f"{where.hostname}:{where.port}" if where else "")
    return nc


async def publish_event(
    js: JetStreamContext,
    subject: str,
    event: Message,
    *,
    msg_id: str | None = None,
    timeout: float = 5.0,
) -> PubAck:
    """Publish durably; returns once JetStream has stored it (raises otherwise)."""
    return await publish_encoded(
        js, subject, event.schema_, event.to_bytes(), msg_id=msg_id, timeout=timeout
    )


async def publish_encoded(
    js: JetStreamContext,
    subject: str,
    schema: str,
    payload: bytes,
    *,
    msg_id: str | None = None,
    timeout: float = 5.0,
) -> PubAck:
    """`publish_event` for an event already serialised (`Message.to_bytes`), e.g. read back
    from the outbox: the same headers, no second serialisation."""
    headers = correlation_headers()
    headers["Nats-Schema"] = schema
    if msg_id:
        headers[MSG_ID_HEADER] = msg_id
    ack: PubAck = await js.publish(subject, payload, timeout=timeout, headers=headers)
    return ack


async def request(
    nc: NATS, subject: str, payload: Message, result_type: type[R], *, timeout: float = 5.0
) -> R:
    """Ask a service and wait for its answer; its error comes back as the same ApiError.

    "No responders" means the request reached no one (a replica restarting, a deploy): it was
    not handled, so asking again within the timeout is safe and usually answered.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = 0.05
    try:
        while True:
            try:
                reply = await nc.request(
                    subject,
                    payload.to_bytes(),
                    timeout=max(deadline - loop.time(), 0.01),
                    headers=correlation_headers(),
                )
                break
            except NoRespondersError:
                if loop.time() + pause >= deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
    except (NatsTimeoutError, NoRespondersError, TimeoutError) as exc:
        NATS_REQUESTS.labels(subject=subject, outcome="unavailable").inc()
        log.warning("request unanswered", subject=subject, error=type(exc).__name__)
        raise ApiError(
            503,
            "unavailable",
            "the service did not answer in time, try again shortly",
            headers={"Retry-After": "1"},
        ) from exc
    code = (reply.headers or {}).get(ERROR_CODE_HEADER)
    if code:
        NATS_REQUESTS.labels(subject=subject, outcome="error").inc()
        try:
            body = ErrorBody.model_validate_json(reply.data)
            status = int(code)
        except (ValidationError, ValueError):
            raise ApiError(502, "bad_gateway", "a service answered with an error") from None
        err = ApiError.from_body(status, body)
        err.headers.update(_http_headers_from(reply.headers))
        raise err
    NATS_REQUESTS.labels(subject=subject, outcome="ok").inc()
    return result_type.from_bytes(reply.data)


Handler = Callable[[Any], Awaitable[Message]]


#: An error reply carries the HTTP headers of its ApiError (e.g. `Retry-After`) with this
#: prefix, so that the gateway can answer with them.
HTTP_HEADER_PREFIX = "Axiom-Http-"


def _http_headers_from(headers: dict[str, str] | None) -> dict[str, str]:
    n = len(HTTP_HEADER_PREFIX)
    return {k[n:]: v for k, v in (headers or {}).items() if k.startswith(HTTP_HEADER_PREFIX)}


@dataclass(frozen=True)
class Endpoint:
    name: str
    subject: str
    input_type: type[Message]
    handler: Handler


class InFlight:
    """Runs request handlers as tasks, at most `limit` at once, and waits for them at shutdown.

    nats-py calls a subscription's callback for one message at a time: without this, a handler
    that waits on an upstream serves one request per replica at a time.
    """

    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(
        self, handle: Callable[[Request], Coroutine[Any, Any, None]], req: Request
    ) -> None:
        # Waiting for a slot holds the subscription's loop: that is the back-pressure.
        await self._slots.acquire()
        task: asyncio.Task[None] = asyncio.create_task(handle(req))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def wait(self, timeout: float) -> None:
        """Let the handlers in flight finish (cancelled after `timeout`)."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()


async def serve(
    nc: NATS,
    name: str,
    version: str,
    endpoints: Sequence[Endpoint],
    description: str = "",
    *,
    in_flight: InFlight | None = None,
) -> Service:
    """Serve request/reply endpoints as a `nats.micro` service (queue group `q`). With
    `in_flight`, requests are handled concurrently (stop the service, then `in_flight.wait`)."""
    service = await add_service(
        nc, ServiceConfig(name=name, version=version, description=description)
    )
    try:
        for endpoint in endpoints:
            handle = _wrap(endpoint)
            if in_flight is not None:
                handle = functools.partial(in_flight.submit, handle)
            await service.add_endpoint(
                EndpointConfig(name=endpoint.name, subject=endpoint.subject, handler=handle)
            )
        # The subscriptions exist once the server has them: before that, requests see no
        # responders.
        await nc.flush()
    except BaseException:
        await service.stop()
        raise
    return service


def _wrap(endpoint: Endpoint) -> Callable[[Request], Coroutine[Any, Any, None]]:
    async def handle(req: Request) -> None:
        bind_correlation_id((req.headers or {}).get(CORRELATION_HEADER))
        try:
            try:
                payload = endpoint.input_type.from_bytes(req.data)
            except ValidationError as exc:
                raise validation_error(exc) from None
            result = await endpoint.handler(payload)
            await req.respond(result.to_bytes())
        except ApiError as err:
            await req.respond_error(
                str(err.status),
                err.code,
                err.body().model_dump_json().encode(),
                headers={f"{HTTP_HEADER_PREFIX}{k}": v for k, v in err.headers.items()},
            )
        except Exception:
            log.exception("request handler failed", subject=endpoint.subject)
            internal = ApiError(500, "internal", "internal error")
            await req.respond_error(
                "500", internal.code, internal.body().model_dump_json().encode()
            )
        finally:
            unbind_correlation_id()

    return handle


class PermanentError(Exception):
    """The message can never succeed: dead-letter it now instead of retrying."""


class JetStreamConsumer(Generic[M]):
    """Pull messages of one type from a durable consumer and hand each to `handler`.

    The handler's return means done (ack). An exception means try again later (nak with the
    spec's backoff), up to `max_deliver` deliveries; then, or at once for a message that does
    not parse or raises `PermanentError`, the message is copied to the dead-letter subject with
    the reason and terminated, so it never blocks the ones behind it.
    """

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        spec: ConsumerSpec,
        message_type: type[M],
        handler: Callable[[M, Msg], Awaitable[None]],
        *,
        replica_id: str | None = None,
        concurrency: int = 16,
        fetch_timeout: float = 1.0,
    ) -> None:
        self._nc = nc
        self._js = js
        self._spec = spec
        self._type = message_type
        self._handler = handler
        self._replica_id = replica_id
        self._concurrency = concurrency
        #: Fetch again once this few are left in hand (half the window).
        self._refill_below = concurrency // 2
        self._fetch_timeout = fetch_timeout
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.name = spec.consumer_name(replica_id)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.name}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self, timeout: float = 8.0) -> None:
        """Stop fetching; let the messages in hand finish (or be redelivered elsewhere)."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def _run(self) -> None:
        """Keep up to `concurrency` messages in hand: once half of them are done, fetch more.
        (A batch is not waited for as a whole: one slow message never holds up the others.)"""
        sub: JetStreamContext.PullSubscription | None = None
        in_hand: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                try:
                    if sub is None:
                        await ensure_consumer(self._nc, self._js, self._spec, self._replica_id)
                        sub = await self._js.pull_subscribe_bind(
                            durable=self.name, stream=self._spec.stream
                        )
                    if len(in_hand) > self._refill_below:
                        # Refill in batches, not one message per finished task: each fetch
                        # is a round trip of its own.
                        await asyncio.wait(in_hand, return_when=asyncio.FIRST_COMPLETED)
                        continue
                    try:
                        msgs = await sub.fetch(
                            self._concurrency - len(in_hand), timeout=self._fetch_timeout
                        )
                    except (NatsTimeoutError, TimeoutError):
                        continue
                    for msg in msgs:
                        task = asyncio.create_task(self._process(msg))
                        in_hand.add(task)
                        task.add_done_callback(in_hand.discard)
                except asyncio.CancelledError:
                    raise
                except (NotFoundError, ServiceUnavailableError) as exc:
                    # The consumer vanished (NATS restarted without it, or it expired): recreate.
                    log.warning(
                        "consumer lost, recreating", consumer=self.name, error=str(exc)[:200]
                    )
                    await self._drop(sub)
                    sub = None
                    await self._pause(0.5)
                except Exception as exc:
                    log.warning("consumer loop error", consumer=self.name, error=repr(exc)[:200])
                    if not self._nc.is_connected:
                        await self._drop(sub)
                        sub = None
                    await self._pause(0.5)
            # Stopping: the messages in hand finish (stop() cancels them past its timeout).
            if in_hand:
                await asyncio.wait(set(in_hand))
        finally:
            for task in in_hand:
                task.cancel()
            if in_hand:
                await asyncio.wait(set(in_hand))
            await self._drop(sub)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    @staticmethod
    async def _drop(sub: JetStreamContext.PullSubscription | None) -> None:
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _process(self, msg: Msg) -> None:
        bind_correlation_id((msg.headers or {}).get(CORRELATION_HEADER))
        try:
            meta = msg.metadata
            delivered = meta.num_delivered
            if delivered > 1:
                JS_REDELIVERIES.labels(consumer=self._spec.durable).inc()
            try:
                event = self._type.from_bytes(msg.data)
            except ValidationError as exc:
                await self._dead_letter(msg, f"malformed message: {_summary(exc)}")
                return
            try:
                await self._handler(event, msg)
            except PermanentError as exc:
                await self._dead_letter(msg, f"permanent error: {exc}"[:500])
                return
            except Exception as exc:
                if delivered >= self._spec.max_deliver:
                    await self._dead_letter(
                        msg, f"gave up after {delivered} deliveries: {exc!r}"[:500]
                    )
                    return
                delays = self._spec.retry_delays
                delay = delays[min(delivered - 1, len(delays) - 1)]
                log.warning(
                    "message failed, will retry",
                    consumer=self.name,
                    delivered=delivered,
                    retry_in=delay,
                    error=repr(exc)[:300],
                )
                await msg.nak(delay=delay)
                return
            # A plain ack, not ack_sync's request/reply: waiting for the server to confirm it
            # bought nothing (a lost ack is a redelivery after ack_wait either way, and every
            # handler is idempotent: version-guarded writes, receipts unique by signature) and
            # cost a round trip per message, 10% of the payments and verifier CPU per payment.
            await msg.ack()
        except Exception as exc:
            # Ack or nak did not reach the server: JetStream redelivers after ack_wait.
            log.warning("ack failed, message will be redelivered", error=repr(exc)[:200])
        finally:
            unbind_correlation_id()

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        meta = msg.metadata
        headers = {
            DEAD_LETTER_REASON_HEADER: reason.replace("\r", " ").replace("\n", " "),
            ORIGINAL_SUBJECT_HEADER: msg.subject,
            ORIGINAL_STREAM_HEADER: meta.stream,
            ORIGINAL_SEQUENCE_HEADER: str(meta.sequence.stream),
            DELIVERIES_HEADER: str(meta.num_delivered),
            MSG_ID_HEADER: f"{meta.stream}:{meta.sequence.stream}:{self._spec.durable}",
        }
        headers.update(correlation_headers())
        # Stored first, then terminated: a crash in between redelivers, and the msg id above
        # keeps the dead letter single.
        await self._js.publish(self._spec.dead_letter_subject(), msg.data, headers=headers)
        await msg.term()
        DEAD_LETTERS.labels(consumer=self._spec.durable).inc()
        log.error("message dead-lettered", consumer=self.name, reason=reason[:300])


def _summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "; ".join(parts)
