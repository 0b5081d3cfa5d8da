// The checkout page: catalogue, payment QR, browser wallet, live status (SSE, else polling).
// No external resources and no inline script: the page runs under a strict CSP.
"use strict";

(() => {
  const FINAL = new Set(["provisioned", "failed"]);
  const STEPS = ["pending", "verified", "provisioned"];
  const POLL_MS = 2000;
  const $ = (id) => document.getElementById(id);

  let watcher = null;
  let current = null; // { item, payment }

  // An amount in base units (lamports, or a token's) as a decimal, exactly (no floats).
  function units(amount, decimals) {
    const places = decimals === undefined ? 9 : decimals;
    const digits = String(amount).padStart(places + 1, "0");
    const whole = places ? digits.slice(0, -places).replace(/^0+(?=\d)/, "") : digits;
    const frac = places ? digits.slice(-places).replace(/0+$/, "") : "";
    return frac ? `${whole}.${frac}` : whole;
  }

  // The price in the item's (or payment's) own currency: "0.1 SOL", "5 USDC".
  function price(priced) {
    const currency = priced.currency || "SOL";
    const amount = currency === "SOL" ? priced.amount_lamports : priced.amount;
    return `${units(amount, priced.decimals)} ${currency}`;
  }

  async function api(method, path, body) {
    const init = { method, cache: "no-store", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      const message = data && data.error ? data.error.message : `HTTP ${res.status}`;
      throw new Error(message);
    }
    return data;
  }

  function showError(message) {
    const el = $("error");
    el.textContent = message || "";
    el.hidden = !message;
  }

  // --- catalogue ---------------------------------------------------------------------------
  async function loadCatalog() {
    const state = $("catalog-state");
    try {
      const items = await api("GET", "/api/catalog");
      const list = $("items");
      list.replaceChildren();
      for (const item of items) {
        const li = document.createElement("li");
        li.dataset.orderId = item.order_id;
        const text = document.createElement("span");
        text.textContent = item.label;
        const priceTag = document.createElement("span");
        priceTag.className = "price";
        priceTag.textContent = price(item);
        text.append(priceTag);
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = "Buy";
        button.addEventListener("click", () => buy(item, button));
        li.append(text, button);
        list.append(li);
      }
      state.textContent = items.length ? "" : "Nothing to buy right now.";
      state.hidden = items.length > 0;
    } catch (err) {
      state.textContent = `Could not load the catalogue: ${err.message}`;
    }
  }

  // --- payment -----------------------------------------------------------------------------
  async function buy(item, button) {
    showError("");
    button.disabled = true;
    try {
      const payment = await api("POST", `/api/pay/req/${encodeURIComponent(item.order_id)}`, {});
      show(item, payment);
    } catch (err) {
      showError(`Could not start the payment: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  function show(item, payment) {
    current = { item, payment };
    $("checkout").hidden = false;
    $("checkout").dataset.paymentId = payment.payment_id;
    $("pay-label").textContent = item.label;
    $("pay-amount").textContent = price(payment);
    const qs = new URLSearchParams({ url: payment.transfer_url });
    $("qr").src = `/api/pay/qr/${encodeURIComponent(payment.payment_id)}?${qs}`;
    $("pay-link").href = payment.transfer_url;
    $("wallet-pay").hidden = !walletProvider();
    render({ status: "pending", version: 0 });
    if (watcher) watcher.stop();
    watcher = watch(payment.payment_id);
    $("checkout").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function render(view) {
    const status = view.status;
    const el = $("status");
    el.textContent = status;
    el.dataset.status = status;
    // The last step reached; a failure happens after it, an expiry at "pending".
    let lastGood = STEPS.indexOf(status);
    if (status === "failed") lastGood = STEPS.indexOf(view.failedAfter || "pending");
    if (status === "expired") lastGood = 0;
    const waiting = !FINAL.has(status) && status !== "expired";
    for (const li of $("timeline").children) {
      const index = STEPS.indexOf(li.dataset.step);
      li.classList.toggle("done", index <= lastGood);
      li.classList.toggle("current", waiting && index === lastGood + 1);
      li.classList.toggle("failed", status === "failed" && index === lastGood + 1);
    }
    const problem = $("problem");
    if (status === "failed") {
      problem.textContent = `Payment failed${view.failure_reason ? `: ${view.failure_reason}` : ""}.`;
    } else if (status === "expired") {
      problem.textContent = "This payment request expired. A payment sent now is still checked.";
    } else {
      problem.textContent = "";
    }
    problem.hidden = !problem.textContent;
    if (FINAL.has(status)) $("wallet-pay").hidden = true;
  }

  // --- live status: EventSource, polling check-status when the stream fails ---------------
  function watch(paymentId) {
    const id = encodeURIComponent(paymentId);
    let version = 0;
    let previous = "pending";
    let source = null;
    let timer = null;
    let stopped = false;

    function apply(view) {
      if (stopped || view.version <= version) return;
      version = view.version;
      if (view.status === "failed") view.failedAfter = previous === "verified" ? "verified" : "pending";
      if (view.status !== "failed") previous = view.status;
      render(view);
      if (FINAL.has(view.status)) stop();
    }

    async function poll() {
      try {
        apply(await api("GET", `/api/pay/check-status/${id}`));
      } catch (err) {
        $("live").textContent = `Status check failed (${err.message}); retrying…`;
      }
    }

    function startPolling() {
      if (timer || stopped) return;
      $("live").textContent = "Live updates unavailable: checking every 2 s.";
      $("live").dataset.mode = "polling";
      poll();
      timer = setInterval(poll, POLL_MS);
    }

    function stopPolling() {
      if (timer) clearInterval(timer);
      timer = null;
    }

    function stop() {
      stopped = true;
      stopPolling();
      if (source) source.close();
      $("live").textContent = "";
    }

    if (typeof window.EventSource === "function") {
      source = new EventSource(`/api/sse/payment-status/${id}`);
      source.addEventListener("status", (event) => {
        try {
          apply(JSON.parse(event.data));
        } catch (err) {
          startPolling();
        }
      });
      source.addEventListener("open", () => {
        // The stream is back: it carries every change again.
        stopPolling();
        $("live").textContent = "Live";
        $("live").dataset.mode = "live";
      });
      source.addEventListener("error", () => {
        if (stopped) return;
        // CLOSED: the browser gave up (an error answer). CONNECTING: it retries by itself;
        // meanwhile polling keeps the page true.
        startPolling();
      });
    } else {
      startPolling();
    }
    return { stop };
  }

  // --- browser wallet (Phantom-style provider) --------------------------------------------
  function walletProvider() {
    const phantom = window.phantom && window.phantom.solana;
    const provider = phantom || window.solana;
    return provider && typeof provider.connect === "function" ? provider : null;
  }

  const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
  function base58(bytes) {
    const digits = [];
    for (const byte of bytes) {
      let carry = byte;
      for (let i = 0; i < digits.length; i++) {
        carry += digits[i] << 8;
        digits[i] = carry % 58;
        carry = (carry / 58) | 0;
      }
      while (carry) {
        digits.push(carry % 58);
        carry = (carry / 58) | 0;
      }
    }
    let out = "";
    for (const byte of bytes) {
      if (byte !== 0) break;
      out += "1";
    }
    for (let i = digits.length - 1; i >= 0; i--) out += B58[digits[i]];
    return out;
  }

  async function payWithWallet() {
    const provider = walletProvider();
    if (!provider || !current) return;
    showError("");
    const button = $("wallet-pay");
    button.disabled = true;
    try {
      const connected = await provider.connect();
      const account = (connected && connected.publicKey ? connected.publicKey : provider.publicKey).toString();
      // A payment for this wallet: the answer carries the transaction it has to sign.
      const payment = await api("POST", `/api/pay/req/${encodeURIComponent(current.item.order_id)}`, { account });
      show(current.item, payment);
      const tx = Uint8Array.from(atob(payment.transaction), (c) => c.charCodeAt(0));
      const signatures = tx[0];
      if (signatures !== 1) {
        throw new Error("this payment needs the QR code: scan it with your wallet");
      }
      const message = tx.slice(1 + 64 * signatures);
      await provider.request({ method: "signAndSendTransaction", params: { message: base58(message) } });
      $("live").textContent = "Sent: waiting for the network to finalize it…";
    } catch (err) {
      showError(`Wallet payment did not go through: ${err.message || err}`);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("wallet-pay").addEventListener("click", payWithWallet);
    loadCatalog();
  });
})();
