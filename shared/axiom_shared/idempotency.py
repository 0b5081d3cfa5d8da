"""The one idempotency fingerprint: what a request under an Idempotency-Key is compared by.

A retry with the same key must carry the same request; the fingerprint is a SHA-256 of the
request's canonical JSON (keys sorted, no insignificant white space, UTF-8 as is), so two
requests that mean the same thing have the same fingerprint whichever service stores it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(value: Any) -> str:
    """Hex SHA-256 of `value`'s canonical JSON (`value`: plain JSON data)."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
