"""The one way a presented secret (a webhook's Authorization, an admin token) is checked
against the values we accept, so that rotation (`<NAME>` and `<NAME>_NEXT`) works the same
everywhere and no comparison tells a caller anything about the secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def secret_matches(presented: str | None, accepted: Iterable[str | None]) -> bool:
    """True when `presented` equals one of the `accepted` secrets (unset ones are skipped).

    Length-blind and constant time: both sides are hashed to 32 bytes before
    `hmac.compare_digest`, so neither the time taken nor any early exit depends on how long
    the secret is or on how much of it a guess got right; every accepted value is compared,
    so the time does not say which one matched either.
    """
    if not presented:
        return False
    given = _digest(presented)
    results = [hmac.compare_digest(given, _digest(secret)) for secret in accepted if secret]
    return any(results)
