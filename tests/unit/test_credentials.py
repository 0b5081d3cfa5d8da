"""The one secret compare (`secret_matches`): right answers, and nothing about the secret's
length or which secret matched leaks through what is compared."""

from __future__ import annotations

import hmac
from collections.abc import Callable

import pytest

from axiom_shared.credentials import secret_matches


def test_accepts_the_current_and_the_next_secret() -> None:
    assert secret_matches("s3cret-current", ["s3cret-current", "s3cret-next"])
    assert secret_matches("s3cret-next", ["s3cret-current", "s3cret-next"])
    assert secret_matches("s3cret-next", [None, "s3cret-next"])


@pytest.mark.parametrize(
    "presented",
    [None, "", "s3cret", "s3cret-current-and-more", "S3CRET-CURRENT", " s3cret-current"],
)
def test_refuses_anything_else(presented: str | None) -> None:
    assert not secret_matches(presented, ["s3cret-current", None])


def test_refuses_everything_when_no_secret_is_set() -> None:
    assert not secret_matches("anything", [None, None, ""])
    assert not secret_matches("", [])


def _recording(calls: list[tuple[int, int]]) -> Callable[[bytes, bytes], bool]:
    real = hmac.compare_digest

    def compare(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    return compare


@pytest.mark.parametrize("secret_length", [1, 8, 31, 32, 33, 64, 1000])
@pytest.mark.parametrize("presented_length", [1, 8, 32, 33, 1000])
def test_what_is_compared_does_not_depend_on_lengths(
    monkeypatch: pytest.MonkeyPatch, secret_length: int, presented_length: int
) -> None:
    """A raw `compare_digest(presented, secret)` returns early when the lengths differ, which
    tells a caller the secret's length; here both sides are always 32-byte digests."""
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(hmac, "compare_digest", _recording(calls))
    secret = "k" * secret_length
    secret_matches("k" * presented_length, [secret])
    assert calls == [(32, 32)]


@pytest.mark.parametrize("presented", ["first-secret", "second-secret", "neither"])
def test_every_secret_is_compared_whichever_matches(
    monkeypatch: pytest.MonkeyPatch, presented: str
) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(hmac, "compare_digest", _recording(calls))
    secret_matches(presented, ["first-secret", "second-secret"])
    assert calls == [(32, 32), (32, 32)]


def test_the_admin_token_check_is_the_same_compare() -> None:
    """The rate limiter's admin bypass goes through `secret_matches`: a prefix or a longer
    value of the token is refused, the token and its rotation successor are accepted."""
    from aiohttp.test_utils import make_mocked_request

    from axiom_gateway.ratelimit import is_admin

    def asking(token: str) -> bool:
        request = make_mocked_request("GET", "/", headers={"X-Admin-Token": token})
        return is_admin(request, "X-Admin-Token", ["admin-token-1", "admin-token-2"])

    assert asking("admin-token-1")
    assert asking("admin-token-2")
    assert not asking("admin-token")
    assert not asking("admin-token-11")
    assert not asking("")
