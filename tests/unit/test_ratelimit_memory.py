"""The in-memory sliding window is exact, the rate limiter falls back to it without fuss, and a
client is who the trusted network says it is (never who a forged header says)."""

from __future__ import annotations

import random
from ipaddress import ip_network
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp.test_utils import make_mocked_request
from aiohttp.web import Request
from multidict import CIMultiDict
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from axiom_gateway.client_identity import IdentityRules, authenticated_user_key, client_identity
from axiom_gateway.ratelimit import RateLimiter, decision_headers
from axiom_gateway.ratelimit_memory import Decision, MemorySlidingWindow
from axiom_gateway.ratelimit_settings import RateLimitRule
from axiom_gateway.settings import GatewaySettings
from axiom_shared.http import parse_address


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def max_in_any_window(times: list[float], window: float) -> int:
    """The most of `times` inside any half-open span [t, t + window)."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


# --- the window is exact --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_never_more_than_limit_in_any_window_and_never_a_needless_refusal(seed: int) -> None:
    rng = random.Random(seed)
    limit, window = rng.randint(1, 12), rng.choice([0.5, 1.0, 2.5, 10.0])
    clock = FakeClock()
    limiter = MemorySlidingWindow(clock=clock)
    admitted: list[float] = []
    for _ in range(600):
        # Bursts (many at the same instant), trickles and long pauses.
        clock.now += rng.choice([0.0, 0.0, rng.random() * window / 5, rng.random() * window * 2])
        decision = limiter.hit("client", limit, window)
        in_window = [t for t in admitted if t > clock.now - window]
        # Exact: admitted exactly when fewer than `limit` were admitted in the last window.
        assert decision.allowed is (len(in_window) < limit)
        if decision.allowed:
            admitted.append(clock.now)
            in_window.append(clock.now)
        assert decision.remaining == limit - len(in_window)
        assert decision.reset_ms == pytest.approx((in_window[0] + window - clock.now) * 1000, abs=1)
    assert max_in_any_window(admitted, window) <= limit
    assert len(admitted) >= limit


def test_a_flood_does_not_extend_its_own_lockout() -> None:
    clock = FakeClock()
    limiter = MemorySlidingWindow(clock=clock)
    for _ in range(10):
        assert limiter.hit("c", 10, 10.0).allowed
    for _ in range(100):  # one refused request every 0.09 s for 9 s
        clock.now += 0.09
        decision = limiter.hit("c", 10, 10.0)
        assert not decision.allowed
        assert decision.remaining == 0
    clock.now = 1000.0 + 10.0  # exactly one window after the ten admissions
    assert limiter.hit("c", 10, 10.0).allowed


def test_clients_and_routes_have_their_own_windows() -> None:
    limiter = MemorySlidingWindow(clock=FakeClock())
    assert [limiter.hit("a", 2, 1.0).allowed for _ in range(3)] == [True, True, False]
    assert limiter.hit("b", 2, 1.0).allowed


def test_memory_is_bounded_and_idle_clients_go_first() -> None:
    clock = FakeClock()
    limiter = MemorySlidingWindow(max_clients=100, clock=clock)
    for n in range(1000):
        limiter.hit(f"client-{n}", 5, 1.0)
    assert len(limiter) == 100
    clock.now += 1.0  # every client is idle now
    limiter.hit("fresh", 5, 1.0)
    assert len(limiter) == 1


# --- fallback, metrics labels, logs ---------------------------------------------------------


class FailingScript:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, **_kwargs: Any) -> Any:
        self.calls += 1
        raise RedisConnectionError("connection refused")


class FailingRedis:
    def __init__(self) -> None:
        self.script = FailingScript()

    def register_script(self, _text: str) -> FailingScript:
        return self.script


async def test_fallback_decides_alone_and_warns_once() -> None:
    clock = FakeClock()
    rule = RateLimitRule(prefix="/api/proxy/", limit=3, window=1.0)
    limiter = RateLimiter(
        [rule],
        redis_prefix="t",
        redis_timeout=0.05,
        retry_interval=5.0,
        fallback_max_clients=10,
        clock=clock,
    )
    redis = FailingRedis()
    with capture_logs() as logs:
        labels = [
            (await limiter.decide(rule, "ip:1.2.3.4", cast(Redis, redis))).label for _ in range(50)
        ]
    assert labels == ["fallback_allowed"] * 3 + ["fallback_limited"] * 47
    assert redis.script.calls == 1  # Redis is left alone until the retry interval is over
    assert [entry["log_level"] for entry in logs] == ["warning"]
    clock.now += 5.0
    await limiter.decide(rule, "ip:1.2.3.4", cast(Redis, redis))
    assert redis.script.calls == 2


async def test_no_redis_client_means_fallback_not_an_error() -> None:
    rule = RateLimitRule(prefix="/api/proxy/", limit=1, window=1.0)
    limiter = RateLimiter(
        [rule], redis_prefix="t", redis_timeout=0.05, retry_interval=1, fallback_max_clients=10
    )
    with capture_logs() as logs:
        assert (await limiter.decide(rule, "ip:1.2.3.4", None)).label == "fallback_allowed"
        assert (await limiter.decide(rule, "ip:1.2.3.4", None)).label == "fallback_limited"
    assert [entry["log_level"] for entry in logs] == ["warning"]


def test_longest_prefix_wins_and_other_paths_are_not_limited() -> None:
    rules = [
        RateLimitRule(prefix="/api/proxy/", limit=10, window=10),
        RateLimitRule(prefix="/api/proxy/amadeus/book", limit=2, window=60, policy="book"),
    ]
    limiter = RateLimiter(
        rules, redis_prefix="t", redis_timeout=0.05, retry_interval=1, fallback_max_clients=10
    )
    assert limiter.rule_for("/api/proxy/amadeus/book") == rules[1]
    assert limiter.rule_for("/api/proxy/amadeus/search") == rules[0]
    assert limiter.rule_for("/api/pay/verify") is None
    assert limiter.rule_for("/api/proxy") is None


def test_both_header_families() -> None:
    rule = RateLimitRule(prefix="/api/proxy/", limit=10, window=10)
    headers = decision_headers(rule, Decision(allowed=True, remaining=7, reset_ms=8_200))
    assert headers == {
        "RateLimit-Policy": '"default";q=10;w=10',
        "RateLimit": '"default";r=7;t=9',
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "7",
        "RateLimit-Reset": "9",
    }


# --- settings --------------------------------------------------------------------------------


def test_rate_limit_settings_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "admin"
    token_file.write_text("admin-secret-from-file\n")
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("ADMIN_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7 2001:db8::/32")
    monkeypatch.setenv("RATE_LIMITS", '[{"prefix": "/api/proxy/", "limit": 5, "window": 2}]')
    monkeypatch.setenv("FORWARDED_HEADER", "Forwarded")
    settings = GatewaySettings.load()
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "admin-secret-from-file"
    assert settings.trusted_proxies == [
        ip_network("10.0.0.0/8"),
        ip_network("192.168.1.7/32"),
        ip_network("2001:db8::/32"),
    ]
    assert settings.rate_limits == [RateLimitRule(prefix="/api/proxy/", limit=5, window=2)]
    assert settings.forwarded_header == "forwarded"


def test_default_limit_is_ten_per_ten_seconds_on_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("RATE_LIMITS", "TRUSTED_PROXIES", "ADMIN_TOKEN", "ADMIN_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    settings = GatewaySettings.load()
    assert settings.rate_limits == [RateLimitRule(prefix="/api/proxy/", limit=10, window=10)]
    assert settings.trusted_proxies == []
    assert settings.admin_token is None
    assert 0 < settings.rate_limit_redis_timeout <= 0.1


def test_bad_trusted_proxy_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", "not-a-network")
    with pytest.raises(ValueError, match="trusted_proxies"):
        GatewaySettings.load()


# --- who the client is ----------------------------------------------------------------------


class PeerTransport:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


def request_from(peer: str, **headers: str) -> Request:
    multi = CIMultiDict({name.replace("_", "-"): value for name, value in headers.items()})
    return make_mocked_request(
        "GET", "/api/proxy/echo", headers=multi, transport=PeerTransport(peer)
    )


PROXIES = IdentityRules(trusted_proxies=(ip_network("10.0.0.0/8"), ip_network("fd00::/8")))


def test_untrusted_peer_is_itself_whatever_it_claims() -> None:
    forged = request_from(
        "203.0.113.7",
        X_Forwarded_For="198.51.100.1",
        Forwarded="for=198.51.100.2",
        X_User_Id="admin",
    )
    assert client_identity(forged, PROXIES) == "ip:203.0.113.7"
    assert client_identity(forged, IdentityRules()) == "ip:203.0.113.7"


def test_trusted_peer_right_most_untrusted_hop() -> None:
    # The client forged two hops; our edge proxy (10.1.1.1) appended the real address.
    request = request_from("10.0.0.2", X_Forwarded_For="1.1.1.1, 2.2.2.2, 198.51.100.9, 10.1.1.1")
    assert client_identity(request, PROXIES) == "ip:198.51.100.9"


def test_trusted_peer_several_headers_are_one_list() -> None:
    request = make_mocked_request(
        "GET",
        "/",
        headers=CIMultiDict([("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "198.51.100.9")]),
        transport=PeerTransport("10.0.0.2"),
    )
    assert client_identity(request, PROXIES) == "ip:198.51.100.9"


def test_trusted_peer_without_header_or_all_trusted() -> None:
    assert client_identity(request_from("10.0.0.2"), PROXIES) == "ip:10.0.0.2"
    all_trusted = request_from("10.0.0.2", X_Forwarded_For="10.9.9.9, 10.1.1.1")
    assert client_identity(all_trusted, PROXIES) == "ip:10.9.9.9"


def test_unparseable_hop_is_never_an_identity() -> None:
    for garbage in ("unknown", "_hidden", "x" * 50, ""):
        request = request_from("10.0.0.2", X_Forwarded_For=f"{garbage}, 10.1.1.1")
        assert client_identity(request, PROXIES) == "ip:10.1.1.1"


def test_forwarded_header_when_configured() -> None:
    rules = IdentityRules(trusted_proxies=PROXIES.trusted_proxies, forwarded_header="forwarded")
    request = request_from(
        "10.0.0.2",
        Forwarded='for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711", for=10.3.3.3',
        X_Forwarded_For="198.51.100.1",  # not the header our proxies write: ignored
    )
    assert client_identity(request, rules) == "ip:2001:db8:cafe::/64"
    # The other way round: the client forged `Forwarded`, our proxies write X-Forwarded-For.
    forged = request_from("10.0.0.2", Forwarded="for=1.2.3.4", X_Forwarded_For="198.51.100.1")
    assert client_identity(forged, PROXIES) == "ip:198.51.100.1"


def test_ipv6_clients_count_per_network_and_mapped_ipv4_is_ipv4() -> None:
    one = client_identity(request_from("2001:db8:1:2::1"), IdentityRules())
    two = client_identity(request_from("2001:db8:1:2:ffff::9"), IdentityRules())
    assert one == two == "ip:2001:db8:1:2::/64"
    assert client_identity(request_from("::ffff:198.51.100.4"), IdentityRules()) == (
        "ip:198.51.100.4"
    )


def test_user_id_header_only_from_a_trusted_peer() -> None:
    assert client_identity(request_from("10.0.0.2", X_User_Id="u-42"), PROXIES) == "user:u-42"
    assert client_identity(request_from("203.0.113.7", X_User_Id="u-42"), PROXIES) == (
        "ip:203.0.113.7"
    )


def test_in_process_authenticated_user_wins() -> None:
    request = request_from("203.0.113.7", X_User_Id="someone-else")
    request[authenticated_user_key] = "u-7"
    assert client_identity(request, PROXIES) == "user:u-7"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.51.100.4", "198.51.100.4"),
        ("198.51.100.4:8080", "198.51.100.4"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ('"[2001:db8::1]"', "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("unknown", None),
        ("[2001:db8::1", None),
        ("1.2.3", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    address = parse_address(text)
    assert (str(address) if address else None) == expected
