"""Upstream routing and header filtering (daemon/upstream.py) on their own, without a network."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from daemon.loops import VIA
from daemon.upstream import forward_headers, response_headers


def test_forward_headers_drops_hop_by_hop_ours_and_connection_named() -> None:
    incoming = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Host", "evil.example"),
                ("Authorization", "Bearer k"),
                ("Connection", "keep-alive, X-Foo"),
                ("X-Foo", "1"),
                ("Keep-Alive", "timeout=5"),
                ("X-Meter-App", "a"),
                ("Accept", "*/*"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Length", "3"),
                ("X-Custom", "v"),
            ]
        )
    )
    assert list(forward_headers(incoming).items()) == [
        ("Authorization", "Bearer k"),
        ("Accept", "*/*"),
        ("X-Custom", "v"),
        ("Via", VIA),  # the relay's own, last (daemon.loops: how a loop is seen)
    ]
    back = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Content-Type", "application/json"),
                ("Content-Length", "3"),
                ("X-Meter-Upstream", "kept"),
                ("Connection", "close"),
                ("Set-Cookie", "a=1"),
            ]
        )
    )
    assert list(response_headers(back).items()) == [
        ("Content-Type", "application/json"),
        ("X-Meter-Upstream", "kept"),
        ("Set-Cookie", "a=1"),
    ]


def test_forward_headers_add_our_via_after_the_clients() -> None:
    # RFC 9110 7.6.3: a proxy appends its own entry; the client's (another proxy's) stays first
    incoming = CIMultiDictProxy(CIMultiDict([("Via", "1.1 corporate-proxy"), ("X-A", "1")]))
    assert forward_headers(incoming).getall("Via") == ["1.1 corporate-proxy", VIA]
