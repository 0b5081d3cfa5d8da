"""Who is asking: the client a rate limit counts against.

The authenticated caller when there is one, else the client's address. Headers that name the
caller or its address (`X-User-Id`, `X-Forwarded-For`, `Forwarded`) are believed only when the
direct peer is one of our trusted proxies: anyone else could write anything there and get a
fresh budget with every request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Literal

from aiohttp import web
from multidict import CIMultiDictProxy

from axiom_gateway.ratelimit_settings import RateLimitSettings
from axiom_shared.http import Address, parse_address, peer_address

Network = IPv4Network | IPv6Network
ForwardedHeader = Literal["x-forwarded-for", "forwarded"]

#: Set by an in-process auth layer to the authenticated caller's id; always believed.
authenticated_user_key = web.RequestKey("authenticated_user", str)

_MAX_USER_ID = 256


@dataclass(frozen=True)
class IdentityRules:
    trusted_proxies: Sequence[Network] = ()
    forwarded_header: ForwardedHeader = "x-forwarded-for"
    user_id_header: str = "X-User-Id"
    ipv6_prefix: int = 64

    def is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted_proxies)

    @classmethod
    def from_settings(cls, settings: RateLimitSettings) -> IdentityRules:
        return cls(
            trusted_proxies=tuple(settings.trusted_proxies),
            forwarded_header=settings.forwarded_header,
            user_id_header=settings.user_id_header,
            ipv6_prefix=settings.rate_limit_ipv6_prefix,
        )


def forwarded_hops(headers: CIMultiDictProxy[str], kind: ForwardedHeader) -> list[str]:
    """The hops a forwarded-for header lists, left (furthest) to right (nearest)."""
    if kind == "x-forwarded-for":
        values = headers.getall("X-Forwarded-For", [])
        return [hop.strip() for value in values for hop in value.split(",") if hop.strip()]
    hops: list[str] = []
    for value in headers.getall("Forwarded", []):
        for element in value.split(","):
            hop = ""
            for pair in element.split(";"):
                name, _, raw = pair.partition("=")
                if name.strip().lower() == "for":
                    hop = raw.strip()
            # An element without `for=` still is a hop: it must not let an earlier one pass.
            hops.append(hop or "unknown")
    return hops


def client_address(peer: Address, hops: Iterable[str], rules: IdentityRules) -> Address:
    """The right-most address not among our trusted proxies, walking back from the peer.

    Only the hops to the right of the first untrusted one were written by proxies we trust;
    everything further left is the client's to invent. A hop we cannot parse, reached through
    trusted proxies only, counts as the trusted hop that reported it (never as an identity of
    its own, so rotating garbage buys nothing).
    """
    if not rules.is_trusted(peer):
        return peer
    nearest = peer
    for hop in reversed(list(hops)):
        address = parse_address(hop)
        if address is None:
            return nearest
        if not rules.is_trusted(address):
            return address
        nearest = address
    return nearest


def address_identity(address: Address, ipv6_prefix: int) -> str:
    if isinstance(address, IPv6Address):
        return f"ip:{ip_network(f'{address}/{ipv6_prefix}', strict=False)}"
    return f"ip:{address}"


def authenticated_user(request: web.Request, rules: IdentityRules) -> str | None:
    """The caller's user id as our auth layer or a trusted proxy states it; None otherwise
    (anything a client writes itself is not an identity)."""
    user_id: str | None = request.get(authenticated_user_key)
    if user_id:
        return user_id[:_MAX_USER_ID]
    _text, peer = peer_address(request)
    if peer is not None and rules.is_trusted(peer):
        header_user = request.headers.get(rules.user_id_header, "").strip()
        if header_user:
            return header_user[:_MAX_USER_ID]
    return None


def client_identity(request: web.Request, rules: IdentityRules) -> str:
    """A stable name for the client: `user:<id>` or `ip:<address or IPv6 network>`."""
    user_id = authenticated_user(request, rules)
    if user_id:
        return f"user:{user_id}"
    peer_text, peer = peer_address(request)
    if peer is None:
        # A unix socket or an unknown transport: one client, whoever it is.
        return f"peer:{(peer_text or 'unknown')[:_MAX_USER_ID]}"
    if rules.is_trusted(peer):
        hops = forwarded_hops(request.headers, rules.forwarded_header)
        return address_identity(client_address(peer, hops, rules), rules.ipv6_prefix)
    return address_identity(peer, rules.ipv6_prefix)
