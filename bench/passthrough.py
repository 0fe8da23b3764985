"""The Python floor: a bare aiohttp pass-through relay with no metering at all.

What any aiohttp relay must do and nothing more: one keep-alive `ClientSession` (no
decompression), forward method, path, query, headers and body, and stream the upstream's body
back chunk by chunk as it arrives. The daemon's cost over this is the cost of metering.

Run: ``python bench/passthrough.py --upstream http://127.0.0.1:U --port 0`` prints
``{"event": "listening", "url": ...}`` on stdout once it accepts connections; SIGTERM or SIGINT
stops it. It uses uvloop when installed, as the daemon does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL

HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    )
)
AUTO_HEADERS = (istr("User-Agent"), istr("Accept"), istr("Accept-Encoding"), istr("Content-Type"))
SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)


def _without_hop_by_hop(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in HOP_BY_HOP:
            out.add(name, value)
    return out


def build_app(upstream: str) -> web.Application:
    base = upstream.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=600.0)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            auto_decompress=False,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        app[SESSION_KEY] = session
        yield
        await session.close()

    async def relay(request: web.Request) -> web.StreamResponse:
        headers = _without_hop_by_hop(request.headers)
        body = await request.read()
        url = URL(f"{base}{request.raw_path}", encoded=True)
        skip = [h for h in AUTO_HEADERS if h not in headers]
        async with request.app[SESSION_KEY].request(
            request.method,
            url,
            headers=headers,
            data=body or None,
            allow_redirects=False,
            timeout=timeout,
            skip_auto_headers=skip,
        ) as upstream_resp:
            response = web.StreamResponse(
                status=upstream_resp.status,
                reason=upstream_resp.reason,
                headers=_without_hop_by_hop(upstream_resp.headers),
            )
            if upstream_resp.content_length is not None:
                response.content_length = upstream_resp.content_length
            await response.prepare(request)
            async for chunk in upstream_resp.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application(client_max_size=100 * 1024 * 1024)
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


async def serve(host: str, port: int, upstream: str) -> None:
    runner = web.AppRunner(
        build_app(upstream), handle_signals=False, access_log=None, handler_cancellation=True
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    sock_port = runner.addresses[-1][1]
    print(json.dumps({"event": "listening", "url": f"http://{host}:{sock_port}"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8788")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.upstream))
    else:
        uvloop.run(serve(args.host, args.port, args.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
