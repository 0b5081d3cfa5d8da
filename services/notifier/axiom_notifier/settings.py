from __future__ import annotations

import uuid

from pydantic import AliasChoices, Field

from axiom_shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    service_name: str = "notifier"
    port: int = Field(
        default=8081, ge=0, le=65535, validation_alias=AliasChoices("NOTIFIER_PORT", "PORT")
    )
    #: Names this replica's own status-feed consumer (every replica reads every change).
    replica_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex[:12], pattern=r"^[A-Za-z0-9_-]{1,32}$"
    )
