"""Paymob's transaction HMAC: SHA-512 over the values of a fixed field list, in its order,
concatenated with no separator, booleans lowercase, keyed with the merchant's HMAC secret."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping

#: Paymob's signed fields, in the order they are concatenated (dotted names are nested in a
#: POST callback's `obj`, and flat query keys in a GET redirect).
PAYMOB_HMAC_FIELDS: tuple[str, ...] = (
    "amount_cents",
    "created_at",
    "currency",
    "error_occured",  # sic: Paymob's spelling
    "has_parent_transaction",
    "id",
    "integration_id",
    "is_3d_secure",
    "is_auth",
    "is_capture",
    "is_refunded",
    "is_standalone_payment",
    "is_voided",
    "order.id",
    "owner",
    "pending",
    "source_data.pan",
    "source_data.sub_type",
    "source_data.type",
    "success",
)

_HMAC_RE = re.compile(r"^[0-9a-fA-F]{128}$")

SignedValue = str | int | bool


def hmac_text(value: SignedValue) -> str:
    """One value as Paymob writes it: `true`/`false` (never Python's `True`), digits, text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def signed_string(values: Mapping[str, SignedValue]) -> str:
    return "".join(hmac_text(values[name]) for name in PAYMOB_HMAC_FIELDS)


def paymob_hmac(values: Mapping[str, SignedValue], secret: str) -> str:
    """The lowercase hex HMAC-SHA512 Paymob sends for these values."""
    message = signed_string(values).encode()
    return hmac.new(secret.encode(), message, hashlib.sha512).hexdigest()


def hmac_matches(
    given: str | None, values: Mapping[str, SignedValue], secrets: Iterable[str]
) -> bool:
    """True when `given` is the HMAC of `values` under one of `secrets` (current and next),
    compared in constant time; a missing or malformed `given` never matches."""
    if not given or not _HMAC_RE.match(given):
        return False
    received = given.lower().encode()
    # Every secret is tried, so the time does not tell which one matched.
    matches = [
        hmac.compare_digest(paymob_hmac(values, secret).encode(), received) for secret in secrets
    ]
    return any(matches)
