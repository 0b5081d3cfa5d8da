"""The one settings base every service derives from.

Settings are built at start-up (`Settings.load()`), never at import: importing a module needs
no secret. Every secret is a `SecretStr` (its repr is masked) and may also be given as a file
named by `<NAME>_FILE` (the Docker/Kubernetes secrets convention). Secret values are
registered with the log redactor as soon as they are read.
"""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from axiom_shared.logging import register_secret

#: A development merchant address (from a public seed: it must never hold real funds). Used
#: only with ENVIRONMENT=development; anywhere else MERCHANT_WALLET must be set.
DEV_MERCHANT_WALLET = "BDKAK8eCzXZrwWaYnj9LTTTD8RZB9XXhDMvqGobQqcj5"


class ServiceSettings(BaseSettings):
    """What every service needs: where NATS and Redis are, how to log, where to listen."""

    model_config = SettingsConfigDict(
        env_prefix="",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
        populate_by_name=True,
    )

    service_name: str = "service"
    #: `development` allows what must never happen with real money (a development merchant
    #: address, ...); anything else is treated as production. `make run` and the tests set it.
    environment: Literal["development", "staging", "production"] = "production"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    nats_url: str = "nats://127.0.0.1:4222"
    nats_connect_timeout: float = Field(default=2.0, gt=0)
    #: The NATS user this process logs in as: one per service, allowed its own subjects only
    #: (deploy/nats, generated from `topology.py`). Unset: the service's name.
    nats_user: str | None = None
    #: That user's password; give it as a file (`NATS_PASSWORD_FILE`). Unset: no login (a NATS
    #: without authorization, e.g. one a developer already runs).
    nats_password: SecretStr | None = None
    #: CA bundle to verify the NATS server's TLS certificate (`tls://` URLs); unset → system CAs.
    nats_tls_ca_file: str | None = None
    #: JetStream replica count for the streams we declare (1 locally, 3 in a cluster).
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Redis's password (`requirepass`, or the default user's in an ACL file); give it as a
    #: file (`REDIS_PASSWORD_FILE`). A password in REDIS_URL works too, but is then a secret
    #: in an environment variable.
    redis_password: SecretStr | None = None
    redis_timeout: float = Field(default=0.5, gt=0)
    log_level: str = "INFO"
    log_json: bool | None = None
    #: How long SIGTERM waits for in-flight work before the process exits anyway.
    shutdown_timeout: float = Field(default=8.0, gt=0)
    #: Timeout of NATS request/reply calls between services.
    request_timeout: float = Field(default=5.0, gt=0)
    #: HTTP: a connection must deliver its request's headers within this many seconds of
    #: opening (or of its previous answer, when kept alive), or it is closed (slowloris). Also
    #: the idle keep-alive time: longer than aiohttp clients' 15 s, so a pooled connection is
    #: never closed here just as a client reuses it.
    http_header_timeout: float = Field(default=30.0, gt=0)
    #: HTTP: a request body must arrive within this many seconds (408 otherwise).
    http_body_timeout: float = Field(default=10.0, gt=0)
    #: Python's cyclic garbage collector, once the service has started: what start-up built
    #: (modules, schemas, routes) is frozen out of every later collection, and the youngest
    #: generation is collected after this many net new container objects (Python's default,
    #: 700, ran a collection every few requests, and every 100th became a full one that
    #: walked every object: pauses of up to 47 ms in the gateway under load). 0 keeps Python's own.
    gc_threshold: int = Field(default=10_000, ge=0)

    #: Settings that are not secrets but may carry one (an RPC provider's API key in the URL):
    #: these, like every secret, may come from `<NAME>_FILE`.
    may_carry_credentials: ClassVar[frozenset[str]] = frozenset({"redis_url", "solana_rpc_url"})

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """`NAME_FILE=/run/secrets/x` supplies NAME when NAME itself is not set."""
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            secret = field.annotation in (SecretStr, SecretStr | None)
            if not secret and name not in cls.may_carry_credentials:
                continue
            if data.get(name) not in (None, ""):
                continue
            path = os.environ.get(f"{name.upper()}_FILE")
            if path:
                try:
                    data[name] = Path(path).read_text(encoding="utf-8").strip()
                except (OSError, UnicodeDecodeError) as exc:
                    reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                    raise ValueError(
                        f"{name.upper()}_FILE: cannot read {path} ({reason})"
                    ) from None
        return data

    @field_validator("nats_tls_ca_file")
    @classmethod
    def _readable_file(cls, path: str | None) -> str | None:
        if path:
            try:
                Path(path).read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read {path} ({exc.strerror})") from None
        return path

    @model_validator(mode="after")
    def _register_secrets(self) -> Self:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                register_secret(value.get_secret_value())
        return self

    @property
    def nats_login(self) -> tuple[str | None, str | None]:
        """(user, password) for NATS, or (None, None) when no password is configured."""
        password = secret_value(self.nats_password)
        if password is None:
            return None, None
        return self.nats_user or self.service_name, password

    @property
    def development(self) -> bool:
        return self.environment == "development"

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Build the settings from the environment (and `*_FILE` secrets), plus overrides."""
        return cls(**overrides)


def _split_networks(value: Any) -> Any:
    """`10.0.0.0/8, ::1` (comma or space separated) or a JSON list; empty means none."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part for part in text.replace(",", " ").split() if part]
    return value


#: A list of networks (CIDRs or addresses) from one environment variable.
Networks = Annotated[list[IPv4Network | IPv6Network], NoDecode, BeforeValidator(_split_networks)]


def secret_value(secret: SecretStr | None) -> str | None:
    """The plain value of an optional secret; empty strings count as unset."""
    if secret is None:
        return None
    value = secret.get_secret_value()
    return value or None
