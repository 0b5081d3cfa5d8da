"""`make demo`: against a running `make run`, buy one item end to end — create the payment,
pay its Solana Pay URL with a sandbox wallet, and print the status timeline as the browser
would see it over Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import aiohttp

from deploy.local.processes import PORT_VARS, SERVICES
from sandbox.solana.wallet import pay_url

FINAL = {"provisioned", "failed"}


def _print(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def run_demo() -> int:
    port = os.environ.get(PORT_VARS["gateway"]) or str(SERVICES["gateway"][1])
    gateway = os.environ.get("GATEWAY_URL", f"http://127.0.0.1:{port}")
    rpc_url = os.environ.get("SOLANA_RPC_URL", "http://127.0.0.1:8899")
    started = time.monotonic()

    def stamp() -> str:
        return f"{time.monotonic() - started:6.2f}s"

    async with aiohttp.ClientSession() as http:
        try:
            async with http.get(gateway + "/api/catalog") as resp:
                catalog = await resp.json()
        except aiohttp.ClientError:
            _print(f"nothing answers at {gateway}: start the stack with `make run` first")
            return 1
        item = catalog[0]
        async with http.post(f"{gateway}/api/pay/req/{item['order_id']}", json={}) as resp:
            payment = await resp.json()
        _print(f"{stamp()}  created {payment['payment_id']} for {item['label']}")
        _print(f"         pay: {payment['transfer_url']}")
        timeline: list[str] = []

        async def follow() -> None:
            url = f"{gateway}/api/sse/payment-status/{payment['payment_id']}"
            timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
            async with http.get(url, timeout=timeout) as stream:
                async for raw in stream.content:
                    line = raw.decode().strip()
                    if not line.startswith("data:"):
                        continue
                    view = json.loads(line[5:])
                    if view["status"] not in timeline:
                        timeline.append(view["status"])
                        reason = view.get("failure_reason") or ""
                        _print(f"{stamp()}  {view['status']} {reason}".rstrip())
                    if view["status"] in FINAL:
                        return

        watcher = asyncio.create_task(follow())
        await asyncio.sleep(0.3)
        signature = await pay_url(payment["transfer_url"], rpc_url)
        _print(f"{stamp()}  paid by the sandbox wallet: {signature}")
        try:
            await asyncio.wait_for(watcher, 120)
        except TimeoutError:
            _print("no final status within 120 s")
            return 1
    _print("timeline: " + " → ".join(timeline))
    return 0 if timeline and timeline[-1] == "provisioned" else 1
