// The checkout page: catalogue, Solana Pay QR (transaction request, or transfer), browser
// wallets found through the Wallet Standard, a countdown to expiry, and live status (SSE, else
// polling) that shows a payment as soon as it is seen and as done only once it is final.
// No external resources, no inline script, no build step: the page runs under a strict CSP.
"use strict";

(() => {
  const FINAL = new Set(["provisioned", "failed"]);
  const STEPS = ["pending", "seen", "verified", "provisioned"];
  const POLL_MS = 2000;
  // What the page tells the buyer to expect between "seen" (confirmed) and final.
  const FINALITY_HINT = "usually about 13 seconds";
  const $ = (id) => document.getElementById(id);

  let watcher = null;
  let countdown = null;
  let current = null; // { item, payment, view }
  let clockSkewMs = 0; // server time minus this browser's, from the Date header

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

  class ApiError extends Error {
    constructor(status, message, problem) {
      super(problem ? `${message} (${problem})` : message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const init = { method, cache: "no-store", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    // The Date header has whole seconds: only a clock that is really off is corrected.
    const date = Date.parse(res.headers.get("Date") || "");
    if (!Number.isNaN(date)) {
      const skew = date - Date.now();
      clockSkewMs = Math.abs(skew) > 2000 ? skew : 0;
    }
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      const error = data && data.error;
      const detail = error && error.details && error.details[0];
      throw new ApiError(
        res.status,
        error ? error.message : `HTTP ${res.status}`,
        detail ? detail.problem : "",
      );
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
        button.setAttribute("aria-label", `Buy ${item.label}`);
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

  function qrSource(paymentId, url) {
    const qs = new URLSearchParams({ url });
    return `/api/pay/qr/${encodeURIComponent(paymentId)}?${qs}`;
  }

  function showQr(kind) {
    const payment = current.payment;
    const request = kind === "request" && payment.transaction_request_url;
    const url = request ? payment.transaction_request_url : payment.transfer_url;
    $("qr").src = qrSource(payment.payment_id, url);
    $("qr").dataset.kind = request ? "transaction-request" : "transfer";
    $("qr").alt = request
      ? "Solana Pay QR code (transaction request): scan it with your wallet"
      : "Solana Pay QR code (transfer request): scan it with your wallet";
    $("qr-caption").textContent = request
      ? "Scan with a Solana Pay wallet: it fetches this payment's transaction from us" +
        " (the merchant can pay the network fee)."
      : "Scan with a Solana Pay wallet: it builds the transfer itself (you pay the network fee).";
    const switcher = $("qr-switch");
    switcher.hidden = !payment.transaction_request_url;
    switcher.textContent = request
      ? "Show the transfer QR code instead"
      : "Show the transaction request QR code instead";
    switcher.dataset.next = request ? "transfer" : "request";
  }

  function show(item, payment) {
    current = { item, payment, view: null };
    $("checkout").hidden = false;
    $("checkout").dataset.paymentId = payment.payment_id;
    $("pay-label").textContent = item.label;
    $("pay-amount").textContent = price(payment);
    $("pay-options").hidden = false;
    $("fresh-payment").hidden = true;
    $("signature").hidden = true;
    showQr("request");
    $("pay-link").href = payment.transaction_request_url || payment.transfer_url;
    $("request-link-item").hidden = !payment.transaction_request_url;
    $("transfer-link").href = payment.transfer_url;
    setWalletState("");
    walletBusy = false;
    renderWallets();
    render({ status: "pending", version: 0 });
    startCountdown(payment.expires_at);
    if (watcher) watcher.stop();
    watcher = watch(payment.payment_id);
    $("checkout").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function payable() {
    return current && (!current.view || current.view.status === "pending") && !current.expired;
  }

  // --- time left ---------------------------------------------------------------------------
  function startCountdown(expiresAt) {
    if (countdown) clearInterval(countdown);
    const deadline = Date.parse(expiresAt) - clockSkewMs;
    const box = $("countdown");
    box.hidden = false;
    box.classList.remove("soon");
    $("countdown-note").textContent = "";
    let warned = false;
    const tick = () => {
      const left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
      const minutes = Math.floor(left / 60);
      const seconds = String(left % 60).padStart(2, "0");
      $("time-left").textContent = `${minutes}:${seconds}`;
      $("time-left").dataset.seconds = String(left);
      box.classList.toggle("soon", left <= 60);
      if (left <= 60 && left > 0 && !warned) {
        warned = true;
        $("countdown-note").textContent = "Less than a minute left to pay.";
      }
      if (left === 0) {
        clearInterval(countdown);
        countdown = null;
        expiredHere();
      }
    };
    tick();
    countdown = setInterval(tick, 1000);
  }

  function stopCountdown() {
    if (countdown) clearInterval(countdown);
    countdown = null;
    $("countdown").hidden = true;
  }

  // The request ran out while the page was open: no dead QR code, a fresh payment instead. A
  // transaction already seen is still followed (a late receipt still counts).
  function expiredHere() {
    if (!current || !payable()) return;
    const view = current.view;
    if (view && view.seen_signature && !view.seen_outcome) return;
    current.expired = true;
    render(Object.assign({}, view || { status: "pending", version: 0 }, { status: "expired" }));
  }

  function announce(text) {
    // The status line is the page's one polite live region.
    const el = $("status");
    if (el.textContent !== text) el.textContent = text;
  }

  // --- what the buyer reads ----------------------------------------------------------------
  function describe(view) {
    const status = view.status;
    // A seen transaction counted at finalized says no more than the amounts and status do.
    const seen = Boolean(view.seen_signature) && view.seen_outcome !== "counted";
    if (status === "provisioned") return "Paid: your purchase is ready.";
    if (status === "verified") return "Payment final on chain: preparing your purchase…";
    if (status === "failed") return "Payment failed.";
    if (status === "expired") return "This payment request expired.";
    if (seen && view.seen_outcome === "not_finalized") {
      return "The transaction we saw was never finalized: it did not go through.";
    }
    if (seen && view.seen_outcome === "not_a_receipt") {
      return "The transaction we saw does not pay this order.";
    }
    if (seen) return `Payment seen, waiting for finality (${FINALITY_HINT}).`;
    const received = view.currency && view.currency !== "SOL" ? view.received : view.received_lamports;
    if (received && received !== "0") {
      return `Received ${units(received, view.decimals)} of ${price(view)}: waiting for the rest.`;
    }
    return "Waiting for payment.";
  }

  function render(view) {
    if (current) current.view = view.version ? view : current.view;
    const status = view.status;
    const seenLive = status === "pending" && Boolean(view.seen_signature) && !view.seen_outcome;
    const el = $("status");
    el.dataset.status = status;
    el.dataset.seen = view.seen_signature ? view.seen_outcome || "seen" : "";
    announce(describe(view));
    // The last step reached; a failure happens after it, an expiry at "pending".
    let lastGood = STEPS.indexOf(status);
    if (status === "pending" && seenLive) lastGood = 1;
    if (status === "failed") lastGood = STEPS.indexOf(view.failedAfter || "pending");
    if (status === "expired") lastGood = 0;
    const waiting = !FINAL.has(status) && status !== "expired";
    // A failure is shown on the step it stopped: being final (after pending), or fulfilment.
    const failedAt = status === "failed" ? STEPS.indexOf(lastGood >= 2 ? "provisioned" : "verified") : -1;
    for (const li of $("timeline").children) {
      const index = STEPS.indexOf(li.dataset.step);
      li.classList.toggle("done", index <= lastGood);
      li.classList.toggle("current", waiting && index === lastGood + 1);
      li.classList.toggle("failed", index === failedAt);
    }
    const problem = $("problem");
    if (status === "failed") {
      problem.textContent = `Payment failed${view.failure_reason ? `: ${view.failure_reason}` : ""}.`;
    } else if (status === "expired") {
      problem.textContent =
        "This payment request expired: start a new payment to pay now." +
        " Money already sent for it is still checked, and given back if it does not complete it.";
    } else if (view.seen_outcome && view.seen_outcome !== "counted") {
      problem.textContent = "Nothing was taken for it: you can pay again with your wallet or the QR code.";
    } else {
      problem.textContent = "";
    }
    problem.hidden = !problem.textContent;
    const over = FINAL.has(status) || status === "verified" || status === "expired";
    if (over) stopCountdown();
    // While a seen payment settles, nothing invites a second one; if it fails, it does again.
    $("pay-options").hidden = over || seenLive;
    if (seenLive || over) setWalletState("");
    $("fresh-payment").hidden = status !== "expired";
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
      if (current && current.expired && view.status === "pending" && !view.seen_signature) {
        view = Object.assign({}, view, { status: "expired" });
      }
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

  // --- browser wallets: the Wallet Standard's discovery, as @wallet-standard/app does it ----
  // The page announces itself (`wallet-standard:app-ready`, carrying `register`) and listens
  // for wallets that load later (`wallet-standard:register-wallet`, carrying a callback).
  const SIGN_AND_SEND = "solana:signAndSendTransaction";
  const CONNECT = "standard:connect";
  const wallets = [];
  let walletBusy = false;
  // After a send, the wallet buttons wait this long for the payment to be seen.
  const RESEND_AFTER_MS = 60_000;

  function canPay(wallet) {
    const features = wallet && wallet.features;
    return Boolean(
      features &&
        features[CONNECT] &&
        features[SIGN_AND_SEND] &&
        (wallet.chains || []).some((chain) => chain.startsWith("solana:")),
    );
  }

  function register(...found) {
    for (const wallet of found) {
      if (canPay(wallet) && !wallets.includes(wallet)) {
        wallets.push(wallet);
        const events = wallet.features["standard:events"];
        if (events) events.on("change", (change) => walletChanged(wallet, change));
      }
    }
    renderWallets();
    return () => {
      for (const wallet of found) {
        const index = wallets.indexOf(wallet);
        if (index >= 0) wallets.splice(index, 1);
      }
      renderWallets();
    };
  }

  const walletApi = Object.freeze({ register });

  class AppReadyEvent extends Event {
    #detail;
    constructor(api) {
      super("wallet-standard:app-ready", { bubbles: false, cancelable: false, composed: false });
      this.#detail = api;
    }
    get detail() {
      return this.#detail;
    }
  }

  function discoverWallets() {
    window.addEventListener("wallet-standard:register-wallet", (event) => {
      try {
        event.detail(walletApi);
      } catch (err) {
        console.warn("a wallet failed to register", err);
      }
    });
    window.dispatchEvent(new AppReadyEvent(walletApi));
  }

  function walletChanged(wallet, change) {
    if (change && Array.isArray(change.accounts) && change.accounts.length === 0) {
      setWalletState(`${wallet.name} disconnected. Nothing was sent: you can try again, or scan the QR code.`);
    }
  }

  function renderWallets() {
    const box = $("wallets");
    box.replaceChildren();
    for (const wallet of wallets) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = wallets.length === 1 ? "Pay with wallet" : `Pay with ${wallet.name}`;
      button.setAttribute("aria-label", `Pay with wallet: ${wallet.name}`);
      button.dataset.wallet = wallet.name;
      button.disabled = walletBusy;
      button.addEventListener("click", () => payWithWallet(wallet));
      box.append(button);
    }
    if (!wallets.length && current && !$("wallet-state").textContent) {
      $("wallet-state").textContent =
        "No browser wallet found: scan the QR code or open the link in your wallet app.";
    }
  }

  function setWalletState(text) {
    $("wallet-state").textContent = text;
  }

  function setBusy(busy) {
    walletBusy = busy;
    for (const button of $("wallets").querySelectorAll("button")) button.disabled = busy;
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

  function rejected(err) {
    const text = `${(err && err.name) || ""} ${(err && err.message) || err || ""}`;
    return (err && err.code === 4001) || /reject|declin|denied|cancel/i.test(text);
  }

  async function payWithWallet(wallet) {
    if (!payable()) return;
    const { item, payment } = current;
    showError("");
    delete $("wallet-state").dataset.outcome;
    setBusy(true);
    let held = null;
    let stage = "connect";
    try {
      setWalletState(`Connecting to ${wallet.name}…`);
      const connected = await wallet.features[CONNECT].connect();
      const account = (connected && connected.accounts && connected.accounts[0]) || wallet.accounts[0];
      if (!account) throw new Error("the wallet shared no account");
      const chains = account.chains && account.chains.length ? account.chains : wallet.chains;
      const chain = chains.find((c) => c.startsWith("solana:"));
      stage = "request";
      setWalletState("Preparing your transaction…");
      // This payment's transaction request, for this account (the merchant may co-sign it as
      // fee payer, so the wallet needs only the price).
      const path =
        `/api/pay/req/${encodeURIComponent(item.order_id)}` +
        `?payment=${encodeURIComponent(payment.payment_id)}`;
      const answer = await api("POST", path, { account: account.address });
      const transaction = Uint8Array.from(atob(answer.transaction), (c) => c.charCodeAt(0));
      stage = "sign";
      setWalletState(`Approve the payment in ${wallet.name}…`);
      const [output] = await wallet.features[SIGN_AND_SEND].signAndSendTransaction({
        account,
        transaction,
        chain,
        options: { commitment: "confirmed" },
      });
      const signature = base58(output.signature);
      $("signature-value").textContent = signature;
      $("signature").dataset.signature = signature;
      $("signature").hidden = false;
      setWalletState("Sent: waiting for the network to see it…");
      // No second payment from the wallet while this one is on its way (seen hides the
      // options; if it never shows, the buttons come back).
      held = setTimeout(() => setBusy(false), RESEND_AFTER_MS);
    } catch (err) {
      const message = err && err.message ? err.message : String(err);
      const again = "Nothing was sent: you can try again, or scan the QR code.";
      if (stage === "request") {
        setWalletState(`The shop refused this wallet account: ${message}. ${again}`);
      } else if (rejected(err)) {
        setWalletState(`You declined in ${wallet.name}. ${again}`);
      } else if (!wallet.accounts.length) {
        setWalletState(`${wallet.name} disconnected. ${again}`);
      } else if (stage === "connect") {
        setWalletState(`Could not connect to ${wallet.name}: ${message}. ${again}`);
      } else {
        setWalletState(`${wallet.name} could not send the payment: ${message}. ${again}`);
      }
      $("wallet-state").dataset.outcome =
        stage === "request"
          ? "refused"
          : rejected(err)
            ? "rejected"
            : wallet.accounts.length
              ? "failed"
              : "disconnected";
    } finally {
      if (!held) setBusy(false);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("qr-switch").addEventListener("click", () => showQr($("qr-switch").dataset.next));
    $("fresh-payment").addEventListener("click", () => {
      if (current) buy(current.item, $("fresh-payment"));
    });
    discoverWallets();
    loadCatalog();
  });
})();
