"""The HTTP client of the Amadeus Self-Service API: token, pacing, timeout, one 401 retry.

`send` makes one logical call: it takes a token (cached, see `tokens`), waits for its send slot
(see `pacing`), and sends with a bounded timeout. A 401 38190 (token expired or revoked at
Amadeus) invalidates that token and sends once more: a 401 means Amadeus did nothing, so this is
safe even for a booking. Whether a failed call reached Amadeus is kept apart, because a booking
depends on it: `UpstreamNotSent` (refused before sending, or the connection was never made) is
safe to repeat; `UpstreamUnanswered` (timeout, connection lost) may have been acted upon.

`send_repeatable` adds bounded retries with exponential backoff and jitter for the calls that are
safe to repeat (search, pricing): 5xx, timeouts and refused connections, never a 4xx or a 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import SecretStr
from redis.exceptions import RedisError

from axiom_amadeus_proxy.pacing import Pacer
from axiom_amadeus_proxy.tokens import IssuedToken, TokenCache
from axiom_shared.errors import ApiError, ErrorDetail
from axiom_shared.logging import get_logger

log = get_logger(__name__)

TOKEN_PATH = "/v1/security/oauth2/token"  # noqa: S105 - a path, not a secret
SEARCH_PATH = "/v2/shopping/flight-offers"
PRICING_PATH = "/v1/shopping/flight-offers/pricing"
ORDERS_PATH = "/v1/booking/flight-orders"

INVALID_ACCESS_TOKEN = 38190
AMADEUS_JSON = "application/vnd.amadeus+json"


class UpstreamNotSent(Exception):
    """Amadeus never received the call; `error` is what to answer. Safe to repeat when
    `retryable` (the connection failed), not when we refused it ourselves (pacing, token)."""

    def __init__(self, error: ApiError, *, retryable: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable


class UpstreamUnanswered(Exception):
    """The call may have reached Amadeus, but no answer came (timeout, connection lost)."""


@dataclass(frozen=True)
class AmadeusResponse:
    status: int
    body: Any
    retry_after: str | None = None

    @property
    def errors(self) -> list[dict[str, Any]]:
        items = self.body.get("errors") if isinstance(self.body, dict) else None
        return [e for e in items if isinstance(e, dict)] if isinstance(items, list) else []

    @property
    def error_codes(self) -> list[int]:
        return [e["code"] for e in self.errors if isinstance(e.get("code"), int)]


def error_details(response: AmadeusResponse) -> list[ErrorDetail]:
    """Amadeus's errors as our details: where (parameter or pointer) and Amadeus's title and
    code. Its free-text `detail` is left out: it may echo what was sent."""
    details = []
    for item in response.errors[:10]:
        source = item.get("source")
        where = (
            (source.get("parameter") or source.get("pointer")) if isinstance(source, dict) else None
        )
        title = str(item.get("title") or "error")[:100]
        details.append(
            ErrorDetail(
                field=str(where)[:200] if where else None,
                problem=f"{title} (Amadeus {item.get('code', '?')})",
            )
        )
    return details


def upstream_error(response: AmadeusResponse) -> ApiError:
    """The generic answer for an Amadeus error (callers map their own special codes first)."""
    if response.status == 429:
        return ApiError(
            429,
            "upstream_rate_limited",
            "the travel provider is busy, try again shortly",
            headers={"Retry-After": response.retry_after or "1"},
        )
    if response.status in (401, 403):
        log.error("amadeus refused our credentials", status=response.status)
        return ApiError(502, "upstream_auth_failed", "the travel provider refused our credentials")
    if 400 <= response.status < 500:
        return ApiError(
            422,
            "upstream_rejected",
            "the travel provider refused the request",
            error_details(response),
        )
    return ApiError(
        502,
        "upstream_error",
        "the travel provider failed, try again shortly",
        headers={"Retry-After": "1"},
    )


class AmadeusClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        tokens: TokenCache | None = None,
        pacer: Pacer,
        timeout: float,
        attempts: int,
        retry_base_delay: float,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._pacer = pacer
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._attempts = attempts
        self._retry_base_delay = retry_base_delay
        self.tokens = tokens

    # --- token -------------------------------------------------------------------------------

    async def fetch_token(self) -> IssuedToken:
        """`POST /v1/security/oauth2/token` (client credentials); the token endpoint is not
        paced: Amadeus does not count it against the API quota."""
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
        }
        try:
            async with self._session.post(
                self._base_url + TOKEN_PATH, data=form, timeout=self._timeout
            ) as resp:
                status = resp.status
                body = await _json_or_none(resp)
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("amadeus token request failed", error=type(exc).__name__)
            raise ApiError(
                503,
                "upstream_unavailable",
                "the travel provider cannot be reached, try again shortly",
                headers={"Retry-After": "1"},
            ) from None
        if status != 200 or not isinstance(body, dict):
            log.error("amadeus token refused", status=status)
            raise ApiError(
                502, "upstream_auth_failed", "the travel provider refused our credentials"
            )
        token = body.get("access_token")
        expires_in = body.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, int | float):
            raise ApiError(502, "upstream_auth_failed", "the travel provider sent no usable token")
        return IssuedToken(token, float(expires_in))

    # --- calls -------------------------------------------------------------------------------

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> AmadeusResponse:
        """One call, paced, with one retry after a 401 38190 (see the module docstring)."""
        tokens = self.tokens
        assert tokens is not None, "AmadeusClient.tokens is set at start-up"
        retried_401 = False
        while True:
            try:
                await tokens.get()  # a cold token is fetched before queueing for a slot
                # ... and read again at the slot: it may have been replaced while we queued.
                token = await self._pacer.wait_for_slot(tokens.get)
            except ApiError as err:
                raise UpstreamNotSent(err) from None
            except (RedisError, OSError) as exc:
                log.warning("redis unavailable for the amadeus proxy", error=type(exc).__name__)
                raise UpstreamNotSent(
                    ApiError(
                        503,
                        "unavailable",
                        "a dependency is unavailable, try again shortly",
                        headers={"Retry-After": "1"},
                    )
                ) from None
            response = await self._http(method, path, token, params, body)
            if (
                response.status == 401
                and INVALID_ACCESS_TOKEN in response.error_codes
                and not retried_401
            ):
                retried_401 = True
                # Redis down: the retry reads the same token and its 401 is passed on.
                with contextlib.suppress(RedisError, OSError):
                    await tokens.invalidate(token)
                continue
            return response

    async def send_repeatable(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> AmadeusResponse:
        """`send` for calls without side effects: 5xx, timeouts and refused connections are
        retried (bounded, with backoff); any other answer is returned as it is."""
        for attempt in range(1, self._attempts + 1):
            last = attempt == self._attempts
            try:
                response = await self.send(method, path, params=params, body=body)
            except UpstreamNotSent as exc:
                if not exc.retryable or last:
                    raise exc.error from None
                outcome = "not connected"
            except UpstreamUnanswered:
                if last:
                    raise ApiError(
                        504,
                        "upstream_timeout",
                        "the travel provider did not answer in time, try again shortly",
                        headers={"Retry-After": "1"},
                    ) from None
                outcome = "no answer"
            else:
                if response.status < 500 or last:
                    return response
                outcome = f"status {response.status}"
            delay = self._retry_base_delay * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
            log.warning("amadeus call failed, retrying", path=path, attempt=attempt, why=outcome)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _http(
        self,
        method: str,
        path: str,
        token: str,
        params: Mapping[str, str] | None,
        body: Any,
    ) -> AmadeusResponse:
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": f"{AMADEUS_JSON}, application/json",
        }
        data = None
        if body is not None:
            headers["Content-Type"] = AMADEUS_JSON
            data = json.dumps(body, separators=(",", ":"))
        try:
            async with self._session.request(
                method,
                self._base_url + path,
                params=params,
                data=data,
                headers=headers,
                timeout=self._timeout,
            ) as resp:
                return AmadeusResponse(
                    resp.status, await _json_or_none(resp), resp.headers.get("Retry-After")
                )
        except aiohttp.ClientConnectorError as exc:
            log.warning("amadeus unreachable", path=path, error=type(exc).__name__)
            raise UpstreamNotSent(
                ApiError(
                    502,
                    "upstream_unavailable",
                    "the travel provider cannot be reached, try again shortly",
                    headers={"Retry-After": "1"},
                ),
                retryable=True,
            ) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("amadeus call unanswered", path=path, error=type(exc).__name__)
            raise UpstreamUnanswered(path) from None


async def _json_or_none(resp: aiohttp.ClientResponse) -> Any:
    """The body as JSON, or None. Read as UTF-8 whatever Content-Type says: Amadeus sends
    `application/json` or `application/vnd.amadeus+json` with no parameter, something on the way
    may add "; charset=utf-8", and neither should matter (nor aiohttp's charset fallback)."""
    raw = await resp.read()
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included
        return None
