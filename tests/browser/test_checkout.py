"""The checkout page in a real browser (Debian's Chromium driven by Playwright): catalogue,
Buy, the Solana Pay QR code, and the live status timeline over SSE, or by polling when the
stream is blocked. Browser wallets, the transaction request QR, "seen" and expiry are in
test_wallet_checkout.py; the shared fixtures and helpers in checkout_page.py.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from playwright.async_api import Browser, Page, Route, expect

from axiom_shared.schemas import PaymentStatus
from sandbox.solana.tokens import SANDBOX_USDC_MINT
from sandbox.solana.wallet import pay_url
from tests.browser.checkout_page import (
    Checkout,
    assert_fits_a_phone,
    buy,
    current_view,
    open_page,
    page_errors,
    publish,
    screenshot,
)

pytestmark = pytest.mark.browser


# --- proven now: the page follows the status events -----------------------------------------


async def test_timeline_follows_live_status_events(
    browser: Browser, checkout: Checkout, nats_client: NATS
) -> None:
    page = await open_page(browser, checkout)
    payment_id = await buy(page)
    await assert_fits_a_phone(page)
    await expect(page.locator("#live")).to_have_attribute("data-mode", "live")

    view = await current_view(checkout, payment_id)
    view = await publish(nats_client, view, PaymentStatus.VERIFIED)
    await expect(page.locator("#status")).to_have_attribute("data-status", "verified")
    await expect(page.locator("#timeline li[data-step='verified']")).to_have_class("done")
    await expect(page.locator("#timeline li[data-step='provisioned']")).to_have_class("current")

    await publish(nats_client, view, PaymentStatus.PROVISIONED)
    await expect(page.locator("#status")).to_have_attribute("data-status", "provisioned")
    await expect(page.locator("#status")).to_have_text("Paid: your purchase is ready.")
    await expect(page.locator("#timeline li.done")).to_have_count(4)
    await screenshot(page, "checkout-events-provisioned")
    assert page_errors.pop(page) == []


async def test_a_usdc_item_is_priced_and_paid_in_usdc(browser: Browser, checkout: Checkout) -> None:
    """The price, the amount to pay and the wallet QR are in the item's own currency."""
    page = await open_page(browser, checkout)
    await buy(page, "axiomid-pro-monthly-usdc", "5 USDC")
    await expect(page.locator("#pay-amount")).to_have_text("5 USDC")
    link = await page.locator("#pay-link").get_attribute("href")
    assert link is not None
    assert f"spl-token={SANDBOX_USDC_MINT}" in link
    assert "amount=5&" in link
    await screenshot(page, "checkout-usdc")
    assert page_errors.pop(page) == []


async def test_a_failure_shows_its_reason(
    browser: Browser, checkout: Checkout, nats_client: NATS
) -> None:
    page = await open_page(browser, checkout)
    payment_id = await buy(page)
    view = await current_view(checkout, payment_id)
    await publish(nats_client, view, PaymentStatus.FAILED, failure_reason="underpaid")
    await expect(page.locator("#status")).to_have_attribute("data-status", "failed")
    await expect(page.locator("#problem")).to_have_text("Payment failed: underpaid.")
    await expect(page.locator("#timeline li[data-step='verified']")).to_have_class("failed")
    await screenshot(page, "checkout-events-failed")


async def test_polling_takes_over_when_the_stream_is_blocked(
    browser: Browser, checkout: Checkout
) -> None:
    """SSE aborted by the network: the page polls check-status every 2 s. The answers are
    the real ones, with the status moved on by the test."""
    page = await open_page(browser, checkout)
    await page.route("**/api/sse/**", lambda route: route.abort())
    moved_to: dict[str, Any] = {}
    polls: list[float] = []

    async def check_status(route: Route) -> None:
        polls.append(time.monotonic())
        response = await route.fetch()
        body = await response.json()
        body.update(moved_to)
        await route.fulfill(response=response, body=json.dumps(body))

    await page.route("**/api/pay/check-status/**", check_status)
    await buy(page)
    await expect(page.locator("#live")).to_have_attribute("data-mode", "polling")
    moved_to.update(status="verified", version=2)
    await expect(page.locator("#status")).to_have_attribute("data-status", "verified")
    moved_to.update(status="provisioned", version=3)
    await expect(page.locator("#status")).to_have_attribute("data-status", "provisioned")
    count = len(polls)
    await page.wait_for_timeout(2500)
    assert len(polls) == count, "polling must stop after a final status"
    assert all(b - a >= 1.5 for a, b in itertools.pairwise(polls)), polls
    await screenshot(page, "checkout-polling-provisioned")


# --- pay for real (a sandbox wallet scans the transfer URL), wait for provisioned ----------


async def pay_and_expect_provisioned(page: Page, checkout: Checkout, name: str) -> None:
    transfer_url = await page.locator("#transfer-link").get_attribute("href")
    assert transfer_url
    assert transfer_url.startswith("solana:")
    await pay_url(transfer_url, checkout.stack.solana.rpc_url)
    await checkout.stack.solana.finalize()
    finalized = time.monotonic()
    try:
        await expect(page.locator("#status")).to_have_attribute(
            "data-status", "provisioned", timeout=5_000
        )
    finally:
        await screenshot(page, name)
    assert time.monotonic() - finalized < 5.5


async def test_pay_by_qr_after_payment_reaches_provisioned(
    browser: Browser, checkout: Checkout
) -> None:
    page = await open_page(browser, checkout)
    await buy(page)
    await pay_and_expect_provisioned(page, checkout, "checkout-paid-provisioned")
    await expect(page.locator("#timeline li.done")).to_have_count(4)


async def test_polling_after_payment_reaches_provisioned(
    browser: Browser, checkout: Checkout
) -> None:
    page = await open_page(browser, checkout)
    await page.route("**/api/sse/**", lambda route: route.abort())
    await buy(page)
    await expect(page.locator("#live")).to_have_attribute("data-mode", "polling")
    await pay_and_expect_provisioned(page, checkout, "checkout-paid-polling-provisioned")
