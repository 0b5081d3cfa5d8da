from __future__ import annotations

import uuid
from ipaddress import IPv4Network, IPv6Network

from pydantic import AliasChoices, Field

from axiom_shared.service import typed_settings_key
from axiom_shared.settings import Networks, ServiceSettings


def _private_networks() -> list[IPv4Network | IPv6Network]:
    # The notifier is an internal service: only the gateway (or a probe) reaches it, from
    # loopback or a private network. Narrow this where the network is shared with others.
    return [
        IPv4Network("127.0.0.0/8"),
        IPv4Network("10.0.0.0/8"),
        IPv4Network("172.16.0.0/12"),
        IPv4Network("192.168.0.0/16"),
        IPv6Network("::1/128"),
        IPv6Network("fc00::/7"),
    ]


class NotifierSettings(ServiceSettings):
    service_name: str = "notifier"
    port: int = Field(
        default=8081, ge=0, le=65535, validation_alias=AliasChoices("NOTIFIER_PORT", "PORT")
    )
    #: Names this replica's own status-feed consumer (every replica reads every change).
    replica_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex[:12], pattern=r"^[A-Za-z0-9_-]{1,32}$"
    )
    #: Seconds between SSE heartbeat comments (keeps proxies from cutting an idle stream).
    sse_heartbeat_interval: float = Field(default=15.0, gt=0, le=300)
    #: Open SSE streams allowed on this replica, all clients together (429 past it).
    sse_max_streams: int = Field(default=20_000, ge=1)
    #: Open SSE streams allowed per client on this replica (429 past it).
    sse_max_streams_per_client: int = Field(default=20, ge=1)
    #: Peers (CIDRs) whose `X-Axiom-Client` header names the client a stream counts against
    #: (the gateway sets it); anyone else is counted by its own address.
    sse_trusted_proxies: Networks = Field(default_factory=_private_networks)
    #: A write to a client that does not take it within this many seconds drops the stream.
    sse_send_timeout: float = Field(default=30.0, gt=0)


settings_key = typed_settings_key(NotifierSettings)
