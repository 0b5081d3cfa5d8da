"""SPL token contract pieces: associated token accounts, the TransferChecked layout, token
amounts in transfer URLs, and the token balance changes a receipt is read from."""

from __future__ import annotations

import pytest
from solders.keypair import Keypair
from solders.token.associated import get_associated_token_address

from axiom_shared.solana_pay import (
    SolanaPayUrlError,
    decimal_to_units,
    parse_transfer_url,
    transfer_url,
    units_to_decimal,
)
from axiom_shared.spl_token import (
    MAINNET_USDC_MINT,
    TOKEN_PROGRAM_ID,
    TokenBalance,
    associated_token_address,
    token_changes,
    transfer_checked,
)


def test_associated_token_address_is_the_programs() -> None:
    owner, mint = Keypair().pubkey(), Keypair().pubkey()
    assert associated_token_address(owner, mint) == get_associated_token_address(owner, mint)


def test_transfer_checked_layout_and_reference_last() -> None:
    owner, recipient, mint, reference = (Keypair().pubkey() for _ in range(4))
    ix = transfer_checked(
        owner=owner, recipient=recipient, mint=mint, amount=1_500_000, decimals=6,
        references=(reference,),
    )  # fmt: skip
    assert ix.program_id == TOKEN_PROGRAM_ID
    assert bytes(ix.data) == bytes([12]) + (1_500_000).to_bytes(8, "little") + bytes([6])
    keys = [(m.pubkey, m.is_signer, m.is_writable) for m in ix.accounts]
    assert keys == [
        (associated_token_address(owner, mint), False, True),
        (mint, False, False),
        (associated_token_address(recipient, mint), False, True),
        (owner, True, False),
        (reference, False, False),
    ]


@pytest.mark.parametrize(
    ("units", "decimals", "text"),
    [(5_000_000, 6, "5"), (1_500_000, 6, "1.5"), (1, 6, "0.000001"), (100, 0, "100")],
)
def test_token_amounts_round_trip(units: int, decimals: int, text: str) -> None:
    assert units_to_decimal(units, decimals) == text
    assert decimal_to_units(text, decimals) == units


@pytest.mark.parametrize(
    "text", ["0.0000001", "1e6", "-1", "1.", ".5", "5 ", "99999999999999999999999"]
)
def test_bad_token_amounts_are_refused(text: str) -> None:
    with pytest.raises(SolanaPayUrlError):
        decimal_to_units(text, 6)


def test_a_token_transfer_url_names_its_mint() -> None:
    recipient, reference = str(Keypair().pubkey()), str(Keypair().pubkey())
    url = transfer_url(
        recipient, 5_000_000, reference, "L", "M", "memo", spl_token=MAINNET_USDC_MINT, decimals=6
    )
    assert url.startswith(f"solana:{recipient}?amount=5&spl-token={MAINNET_USDC_MINT}&")
    parsed = parse_transfer_url(url)
    assert (parsed.spl_token, parsed.units(6), parsed.lamports) == (MAINNET_USDC_MINT, 5_000_000, 0)
    with pytest.raises(SolanaPayUrlError):
        parse_transfer_url(url.replace("amount=5&", "amount=5e3&"))
    sol = parse_transfer_url(transfer_url(recipient, 100_000_000, reference, "L", "M", "m"))
    assert (sol.spl_token, sol.lamports) == (None, 100_000_000)


def test_token_changes_count_one_mint_and_know_owners() -> None:
    usdc, other = "U" * 32, "O" * 32

    def balance(index: int, mint: str, owner: str, amount: int) -> TokenBalance:
        return TokenBalance(index, mint, owner, amount)

    pre = [balance(1, usdc, "payer", 10), balance(3, other, "merchant", 0)]
    post = [
        balance(1, usdc, "payer", 4),
        balance(2, usdc, "merchant", 6),  # created in the transaction
        balance(3, other, "merchant", 1_000),  # a look-alike mint: not counted
    ]
    assert token_changes(pre, post, usdc) == {
        1: ("payer", "payer", -6),
        2: (None, "merchant", 6),
    }
