"""The checkout page in a real browser (Debian's Chromium driven by Playwright): catalogue,
Buy, the Solana Pay QR code, and the live status timeline over SSE, or by polling when the
stream is blocked.

Chromium comes from `deploy/scripts/ensure-chromium.sh` (never `playwright install`); the
services run in this process on the real NATS, Redis and Solana sandbox of the fixtures.

The two tests named `..._after_payment_...` pay with the sandbox wallet and wait for
`provisioned`: they need issue 4 (verification at finalized, then provisioning). Until it
lands they fail at that last step, by design: they must not be skipped silently.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from playwright.async_api import (
    Browser,
    Page,
    Route,
    ViewportSize,
    async_playwright,
    expect,
)

from axiom_payments.events import deliver
from axiom_payments.events import status_event as outgoing_status
from axiom_shared.schemas import ChangeSource, PaymentStatus, PaymentStatusChanged, PaymentView
from sandbox.solana.tokens import SANDBOX_USDC_MINT
from sandbox.solana.wallet import pay_url
from tests.fixtures.infra import RunningApp
from tests.fixtures.notifier import (
    GatewayFactory,
    NotifierFactory,
)
from tests.fixtures.system import PaymentSystem, SystemFactory

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
ORDER = "axiomid-pro-monthly"
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run deploy/scripts/ensure-chromium.sh")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Checkout:
    stack: PaymentSystem
    notifier: RunningApp
    gateway: RunningApp

    @property
    def url(self) -> str:
        return self.gateway.base_url + "/"


@pytest.fixture
async def checkout(
    payment_system_factory: SystemFactory,
    notifier_factory: NotifierFactory,
    gateway_factory: GatewayFactory,
) -> Checkout:
    """The payment path (payments, verifier, a gateway receiving the sandbox's webhooks), the
    notifier, and a gateway that streams from that notifier for the browser."""
    stack = await payment_system_factory()
    notifier = await notifier_factory()
    gateway = await gateway_factory(notifier_url=notifier.base_url)
    return Checkout(stack, notifier, gateway)


#: Script errors and CSP violations seen by each page.
page_errors: dict[Page, list[str]] = {}


async def open_page(browser: Browser, checkout: Checkout) -> Page:
    page = await browser.new_page(viewport=PHONE)
    errors = page_errors.setdefault(page, [])
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    await page.goto(checkout.url)
    page.set_default_timeout(10_000)
    return page


async def buy(page: Page, order: str = ORDER, price: str = "0.1 SOL") -> str:
    """Click Buy on the order; returns the payment id once the QR and `pending` show."""
    row = page.locator(f"#items li[data-order-id='{order}']")
    await expect(row).to_contain_text("AxiomID Pro")
    await expect(row).to_contain_text(price)
    await row.get_by_role("button", name="Buy").click()
    await expect(page.locator("#checkout")).to_be_visible()
    qr = page.locator("#qr")
    await expect(qr).to_be_visible()
    await page.wait_for_function(
        "() => document.getElementById('qr').complete"
        " && document.getElementById('qr').naturalWidth > 0"
    )
    await expect(page.locator("#status")).to_have_attribute("data-status", "pending")
    await expect(page.locator("#timeline li[data-step='pending']")).to_have_class("done")
    payment_id = await page.locator("#checkout").get_attribute("data-payment-id")
    assert payment_id
    return payment_id


async def assert_fits_a_phone(page: Page) -> None:
    overflow = await page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"


async def screenshot(page: Page, name: str) -> None:
    OUTPUT.mkdir(exist_ok=True)
    await page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)


async def current_view(checkout: Checkout, payment_id: str) -> PaymentView:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{checkout.gateway.base_url}/api/pay/check-status/{payment_id}") as response,
    ):
        assert response.status == 200
        return PaymentView.model_validate(await response.json())


async def publish(
    nc: NATS, view: PaymentView, status: PaymentStatus, **changes: Any
) -> PaymentView:
    """Announce a status change exactly as the payments service does (stream + KV)."""
    changed = view.model_copy(update={"status": status, "version": view.version + 1, **changes})
    event = PaymentStatusChanged(
        payment=changed, previous_status=view.status, source=ChangeSource.OPERATOR
    )
    await deliver(nc.jetstream(), outgoing_status(event))
    return changed


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
    await expect(page.locator("#status")).to_have_text("provisioned")
    await expect(page.locator("#timeline li.done")).to_have_count(3)
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
    the real ones, with the status moved on by the test (the real flow needs issue 4)."""
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


# --- needs issue 4: pay for real, wait for provisioned ----------------------------------------


async def pay_and_expect_provisioned(page: Page, checkout: Checkout, name: str) -> None:
    transfer_url = await page.locator("#pay-link").get_attribute("href")
    assert transfer_url
    assert transfer_url.startswith("solana:")
    await pay_url(transfer_url, checkout.stack.solana.rpc_url)
    await checkout.stack.solana.finalize()
    finalized = time.monotonic()
    try:
        # Issue 4: verification at finalized, then provisioning.
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
    await expect(page.locator("#timeline li.done")).to_have_count(3)


async def test_polling_after_payment_reaches_provisioned(
    browser: Browser, checkout: Checkout
) -> None:
    page = await open_page(browser, checkout)
    await page.route("**/api/sse/**", lambda route: route.abort())
    await buy(page)
    await expect(page.locator("#live")).to_have_attribute("data-mode", "polling")
    await pay_and_expect_provisioned(page, checkout, "checkout-paid-polling-provisioned")
