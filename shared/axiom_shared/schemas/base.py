"""Building blocks of every wire model: the versioned message base and the money/key types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from solders.pubkey import Pubkey as SoldersPubkey
from solders.signature import Signature

U64_MAX = 2**64 - 1


def _pubkey(value: str) -> str:
    # solders parses base58 and checks the length (32 bytes).
    if not isinstance(value, str) or not 32 <= len(value) <= 44:
        raise ValueError("must be a base58 public key (32 bytes)")
    try:
        SoldersPubkey.from_string(value)
    except ValueError:
        raise ValueError("must be a base58 public key (32 bytes)") from None
    return value


def _signature(value: str) -> str:
    if not isinstance(value, str) or not 64 <= len(value) <= 88:
        raise ValueError("must be a base58 transaction signature (64 bytes)")
    try:
        Signature.from_string(value)
    except ValueError:
        raise ValueError("must be a base58 transaction signature (64 bytes)") from None
    return value


def _lamports_in(value: Any) -> Any:
    # Amounts travel as decimal strings (lamports exceed 2^53); accept ints from our own code.
    if isinstance(value, bool):
        raise ValueError("must be a whole number of lamports")
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 20:
            raise ValueError("must be a decimal string of whole lamports")
        return int(value)
    return value


Pubkey = Annotated[
    str,
    AfterValidator(_pubkey),
    WithJsonSchema({"type": "string", "pattern": "^[1-9A-HJ-NP-Za-km-z]{32,44}$"}),
]
TxSignature = Annotated[
    str,
    AfterValidator(_signature),
    WithJsonSchema({"type": "string", "pattern": "^[1-9A-HJ-NP-Za-km-z]{64,88}$"}),
]
Lamports = Annotated[
    int,
    BeforeValidator(_lamports_in),
    Field(ge=0, le=U64_MAX),
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": "^[0-9]{1,20}$"}),
]

#: An amount in the smallest unit of its currency: lamports for SOL, base units for an SPL
#: token (USDC: 10^-6). Same wire form as Lamports (a decimal string).
BaseUnits = Lamports


def utcnow() -> datetime:
    return datetime.now(UTC)


class StrictModel(BaseModel):
    """Unknown fields are refused, values are not coerced silently beyond JSON's own types."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Message(StrictModel):
    """A message on NATS. `schema` names the message and its version (`name/N`); consumers
    accept only the versions they know, and changes are additive within a version."""

    SCHEMA: ClassVar[str]
    #: Filled in from SCHEMA when built in code; required on the wire (see `from_bytes`).
    schema_: str = Field(default="", alias="schema", validate_default=True)

    @field_validator("schema_")
    @classmethod
    def _known_schema(cls, value: str, info: ValidationInfo) -> str:
        expected: str | None = getattr(cls, "SCHEMA", None)
        if expected is None:
            return value
        if value == "":
            if info.context and info.context.get("wire"):
                raise ValueError("schema is required")
            return expected
        if value != expected:
            raise ValueError(f"unexpected schema {value!r}, expected {expected!r}")
        return value

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        return cls.model_validate_json(data, context={"wire": True})
