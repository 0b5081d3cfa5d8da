"""What the browser tests share: Debian's Chromium driven by Playwright, the checkout served by
a real gateway in front of the payment path of the fixtures, and a test wallet that the page
finds through the Wallet Standard.

Chromium comes from `deploy/scripts/ensure-chromium.sh` (never `playwright install`); the
services run in this process on the real NATS, Redis and Solana sandbox of the fixtures.

The test wallet is an init script registered the Wallet Standard way
(`wallet-standard:register-wallet`, and on `wallet-standard:app-ready`), with
`standard:connect`, `standard:disconnect`, `standard:events` and
`solana:signAndSendTransaction`. Its signing is done here, in Python, by a sandbox keypair
behind a function Playwright exposes to the page: the private key never enters the page.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.transaction import Transaction

from axiom_payments.events import deliver
from axiom_payments.events import status_event as outgoing_status
from axiom_shared.schemas import ChangeSource, PaymentStatus, PaymentStatusChanged, PaymentView
from tests.fixtures.infra import RunningApp
from tests.fixtures.notifier import GatewayFactory, NotifierFactory
from tests.fixtures.system import PaymentSystem, SystemFactory

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
PRICE = 100_000_000
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}


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


async def start_checkout(
    payment_system_factory: SystemFactory,
    notifier_factory: NotifierFactory,
    gateway_factory: GatewayFactory,
    *,
    payments: dict[str, Any] | None = None,
    gateway: dict[str, Any] | None = None,
) -> Checkout:
    """The payment path (payments, verifier, a gateway receiving the sandbox's webhooks), the
    notifier, and a gateway that streams from that notifier for the browser."""
    stack = await payment_system_factory(payments=payments)
    notifier = await notifier_factory()
    page_gateway = await gateway_factory(notifier_url=notifier.base_url, **(gateway or {}))
    return Checkout(stack, notifier, page_gateway)


@pytest.fixture
async def checkout(
    payment_system_factory: SystemFactory,
    notifier_factory: NotifierFactory,
    gateway_factory: GatewayFactory,
) -> Checkout:
    return await start_checkout(payment_system_factory, notifier_factory, gateway_factory)


#: Script errors and CSP violations seen by each page.
page_errors: dict[Page, list[str]] = {}


async def open_page(
    browser: Browser,
    checkout: Checkout,
    wallet: TestWallet | None = None,
    viewport: ViewportSize = PHONE,
) -> Page:
    page = await browser.new_page(viewport=viewport)
    errors = page_errors.setdefault(page, [])
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    if wallet is not None:
        await wallet.install(page)
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
    await expect(page.locator("#time-left")).not_to_be_empty()
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


async def screenshots(page: Page, name: str) -> None:
    """The state at a phone's width and a desktop's (`<name>-phone.png`, `-desktop.png`);
    the page is left at the phone's width, and must not scroll sideways there."""
    OUTPUT.mkdir(exist_ok=True)
    await page.set_viewport_size(DESKTOP)
    await page.screenshot(path=str(OUTPUT / f"{name}-desktop.png"), full_page=True)
    await page.set_viewport_size(PHONE)
    await assert_fits_a_phone(page)
    await page.screenshot(path=str(OUTPUT / f"{name}-phone.png"), full_page=True)


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


# --- the test wallet ----------------------------------------------------------------------------

_WALLET_SCRIPT = """
(() => {
  const config = __CONFIG__;
  const chains = ["solana:localnet"];
  const account = Object.freeze({
    address: config.address,
    publicKey: new Uint8Array(config.publicKey),
    chains,
    features: ["solana:signAndSendTransaction"],
  });
  const listeners = new Set();
  let accounts = [];
  const changed = () => { for (const listener of listeners) listener({ accounts }); };
  const wallet = Object.freeze({
    version: "1.0.0",
    name: config.name,
    icon: "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciLz4=",
    chains,
    get accounts() { return accounts; },
    features: {
      "standard:connect": {
        version: "1.0.0",
        connect: async () => { accounts = [account]; changed(); return { accounts }; },
      },
      "standard:disconnect": {
        version: "1.0.0",
        disconnect: async () => { accounts = []; changed(); },
      },
      "standard:events": {
        version: "1.0.0",
        on: (event, listener) => {
          if (event !== "change") return () => {};
          listeners.add(listener);
          return () => listeners.delete(listener);
        },
      },
      "solana:signAndSendTransaction": {
        version: "1.0.0",
        supportedTransactionVersions: ["legacy", 0],
        signAndSendTransaction: async (...inputs) => {
          const outputs = [];
          for (const input of inputs) {
            let binary = "";
            for (const byte of input.transaction) binary += String.fromCharCode(byte);
            const out = await window.__axiomTestWalletSend(
              btoa(binary), input.account.address, input.chain);
            if (out.disconnect) {
              accounts = [];
              changed();
              throw new Error("Wallet disconnected");
            }
            if (out.rejected) {
              const error = new Error("User rejected the request.");
              error.name = "WalletSignTransactionError";
              error.code = 4001;
              throw error;
            }
            if (out.error) throw new Error(out.error);
            outputs.push({
              signature: Uint8Array.from(atob(out.signature), (c) => c.charCodeAt(0)),
            });
          }
          return outputs;
        },
      },
    },
  });
  const callback = ({ register }) => register(wallet);
  class RegisterWalletEvent extends Event {
    #detail;
    constructor(detail) {
      super("wallet-standard:register-wallet", { bubbles: false, composed: false });
      this.#detail = detail;
    }
    get detail() { return this.#detail; }
  }
  try { window.dispatchEvent(new RegisterWalletEvent(callback)); } catch (error) {}
  try {
    window.addEventListener("wallet-standard:app-ready", ({ detail }) => callback(detail));
  } catch (error) {}
})();
"""


@dataclass
class TestWallet:
    """A Wallet Standard wallet whose key is a sandbox keypair held here. `mode`: `approve`
    (sign and send), `reject` (the user declines), `disconnect` (the wallet drops the
    connection instead of signing)."""

    __test__ = False  # not a test class, whatever its name says

    keypair: Keypair
    rpc_url: str
    name: str = "Test Wallet"
    mode: str = "approve"
    signatures: list[str] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return str(self.keypair.pubkey())

    async def install(self, page: Page) -> None:
        await page.expose_function("__axiomTestWalletSend", self._sign_and_send)
        config = {
            "address": self.address,
            "publicKey": list(bytes(self.keypair.pubkey())),
            "name": self.name,
        }
        await page.add_init_script(_WALLET_SCRIPT.replace("__CONFIG__", json.dumps(config)))

    async def _sign_and_send(self, transaction: str, address: str, chain: str) -> dict[str, Any]:
        self.requests.append({"address": address, "chain": chain})
        if self.mode == "reject":
            return {"rejected": True}
        if self.mode == "disconnect":
            return {"disconnect": True}
        assert address == self.address
        tx = Transaction.from_bytes(base64.b64decode(transaction))
        # The buyer's signature beside the merchant's (when it co-signed as fee payer).
        tx.partial_sign([self.keypair], tx.message.recent_blockhash)
        async with AsyncClient(self.rpc_url) as rpc:
            try:
                answer = await rpc.send_raw_transaction(
                    bytes(tx), opts=TxOpts(preflight_commitment=Confirmed)
                )
            except Exception as exc:
                text = str(exc)
                broke = "nsufficient" in text or "no record of a prior credit" in text
                reason = "insufficient funds" if broke else text[:160]
                return {"error": f"the network refused the transaction: {reason}"}
        self.signatures.append(str(answer.value))
        self.sent_at.append(time.monotonic())
        return {"signature": base64.b64encode(bytes(answer.value)).decode()}
