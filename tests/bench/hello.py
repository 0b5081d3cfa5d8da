"""The baseline: a bare aiohttp hello-world, the ceiling any aiohttp service here can reach."""

from __future__ import annotations

import sys

from aiohttp import web


async def hello(_request: web.Request) -> web.Response:
    return web.json_response({"hello": "world"})


def main() -> None:
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_post("/", hello)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[sys.argv.index("--port") + 1]),
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
