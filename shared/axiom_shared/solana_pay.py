"""The Solana Pay URLs, built and read in one place, and the unit conversion they need
(`amount` is decimal SOL, or decimal tokens with `spl-token=<mint>`; lamports and token base
units are what everything else counts).

Transfer request: `solana:<recipient>?amount=<SOL>&reference=<base58>&label=&message=&memo=`
(spec: values URL-encoded, several `reference` allowed, `spl-token` for tokens, the recipient
a wallet).
Transaction request: `solana:<https URL, URL-encoded>`; the wallet GETs it for a label and
an icon, then POSTs `{"account"}` for the transaction to sign.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from axiom_shared.schemas.base import U64_MAX
from axiom_shared.wire import TRANSACTION_REQUEST_PATH, TRANSACTION_REQUEST_PAYMENT_PARAM

LAMPORTS_PER_SOL = 1_000_000_000
#: A SOL amount as a URL carries it: digits, at most 9 decimals (a lamport), no exponent, no
#: sign. Anything else is refused before any arithmetic (`1e999999999` would overflow it).
_SOL_AMOUNT = re.compile(r"^(0|[1-9][0-9]{0,10})(\.[0-9]{1,9})?$")
#: A token amount: the same form, up to 18 decimals (a mint's most); its own decimals are
#: checked when it is converted.
_DECIMAL_AMOUNT = re.compile(r"^(0|[1-9][0-9]{0,19})(\.[0-9]{1,18})?$")


class SolanaPayUrlError(ValueError):
    """The text is not a Solana Pay transfer URL we can read."""


def lamports_to_sol(lamports: int) -> str:
    """Exact decimal SOL for a URL: 100000000 → '0.1'."""
    sol = Decimal(lamports) / Decimal(LAMPORTS_PER_SOL)
    return format(sol.normalize(), "f")


def sol_to_lamports(text: str) -> int:
    """Whole lamports from a decimal SOL amount; SolanaPayUrlError for anything else."""
    if not _SOL_AMOUNT.match(text):
        raise SolanaPayUrlError("amount must be a decimal SOL amount with at most 9 decimals")
    whole, _, fraction = text.partition(".")
    lamports = int(whole) * LAMPORTS_PER_SOL + int(fraction.ljust(9, "0") or "0")
    if lamports > U64_MAX:
        raise SolanaPayUrlError("amount is larger than any balance")
    return lamports


def units_to_decimal(units: int, decimals: int) -> str:
    """Exact decimal amount for a URL: 1500000 base units of a 6-decimal token → '1.5'."""
    return format((Decimal(units) / (Decimal(10) ** decimals)).normalize(), "f")


def decimal_to_units(text: str, decimals: int) -> int:
    """Whole base units from a decimal amount with at most `decimals` decimals;
    SolanaPayUrlError for anything else (no sign, no exponent)."""
    match = _DECIMAL_AMOUNT.match(text)
    if match is None or len(match.group(2) or ".") - 1 > decimals:
        raise SolanaPayUrlError(f"amount must be a decimal amount with at most {decimals} decimals")
    whole, _, fraction = text.partition(".")
    units: int = int(whole) * 10**decimals + int(fraction.ljust(decimals, "0") or "0")
    if units > U64_MAX:
        raise SolanaPayUrlError("amount is larger than any balance")
    return units


def transfer_url(
    recipient: str,
    units: int,
    reference: str,
    label: str,
    message: str,
    memo: str,
    *,
    spl_token: str | None = None,
    decimals: int = 9,
) -> str:
    """`units` lamports, or with `spl_token` base units of that mint (`decimals` its own)."""
    params = [
        ("amount", units_to_decimal(units, decimals) if spl_token else lamports_to_sol(units)),
        *([("spl-token", spl_token)] if spl_token else []),
        ("reference", reference),
        ("label", label),
        ("message", message),
        ("memo", memo),
    ]
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in params)
    return f"solana:{recipient}?{query}"


def transaction_request_url(public_base: str, order_id: str, payment_id: str) -> str | None:
    """The transaction request URL of an existing payment, or None when `public_base` is not
    https (wallets fetch transaction requests over https only)."""
    if not public_base.startswith("https://"):
        return None
    path = TRANSACTION_REQUEST_PATH.format(order_id=quote(order_id, safe=""))
    link = f"{public_base.rstrip('/')}{path}?{TRANSACTION_REQUEST_PAYMENT_PARAM}={payment_id}"
    # Query parameters in the link: the whole link is URL-encoded (spec).
    return "solana:" + quote(link, safe="")


@dataclass(frozen=True)
class TransferRequest:
    recipient: str
    #: The decimal `amount` as written (SOL, or tokens with `spl_token`).
    amount: str
    references: tuple[str, ...]
    label: str | None = None
    message: str | None = None
    memo: str | None = None
    spl_token: str | None = None

    @property
    def lamports(self) -> int:
        """A SOL request's amount in lamports (checked when the URL was read)."""
        return sol_to_lamports(self.amount) if self.spl_token is None else 0

    def units(self, decimals: int) -> int:
        """The amount in base units of a currency with `decimals` (SolanaPayUrlError when it
        has more decimals than the currency)."""
        return decimal_to_units(self.amount, decimals)


def parse_transfer_url(url: str, max_length: int = 2048) -> TransferRequest:
    """Read a transfer-request URL; SolanaPayUrlError naming what is wrong."""
    if len(url) > max_length:
        raise SolanaPayUrlError(f"the URL is longer than {max_length} characters")
    parts = urlsplit(url)
    if parts.scheme != "solana" or parts.netloc or parts.fragment:
        raise SolanaPayUrlError("not a solana: transfer URL")
    query = parse_qs(parts.query, keep_blank_values=True)
    amounts = query.get("amount", [])
    if len(amounts) != 1:
        raise SolanaPayUrlError("exactly one amount is required")

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    spl_token = one("spl-token")
    if spl_token is None:
        sol_to_lamports(amounts[0])  # a SOL amount is checked here, whole
    elif not _DECIMAL_AMOUNT.match(amounts[0]):
        raise SolanaPayUrlError("amount must be a decimal amount")
    return TransferRequest(
        recipient=unquote(parts.path),
        amount=amounts[0],
        spl_token=spl_token,
        references=tuple(query.get("reference", [])),
        label=one("label"),
        message=one("message"),
        memo=one("memo"),
    )
