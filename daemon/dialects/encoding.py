"""Content decoding for the parsers: undo a Content-Encoding on a copy of the bytes.

The client always gets the bytes exactly as the upstream sent them, and the upstream the
request body exactly as the client sent it; only the parsers read decoded bytes (the taps,
and `decode_request_body` for a request's inspection). `DECODABLE` is every coding a tap can
read: the relay narrows a client's Accept-Encoding to it (see
`daemon.upstream.decodable_accept_encoding`), so no response is unreadable to the meter.
"""

from __future__ import annotations

import zlib
from typing import Any

import brotli
import zstandard

# Every coding an SDK may accept (httpx asks for br and zstd when it can decode them), so the
# meter can read whatever the upstream sends; the client still gets the bytes as sent.
DECODABLE = frozenset({"gzip", "x-gzip", "deflate", "identity", "br", "zstd"})


class Decoder:
    """Undoes the upstream's Content-Encoding for the parser only; the client gets raw bytes.

    Incremental: call it with each chunk in order. Raises ValueError for a coding outside
    `DECODABLE` (at construction) and zlib.error (or the codec's own error) on corrupt data.
    """

    def __init__(self, encoding: str) -> None:
        self._obj: Any = _decompressor(encoding)

    def __call__(self, data: bytes) -> bytes:
        if self._obj is None:
            return data
        out: bytes = self._obj.decompress(data)
        return out


_REQUEST_SLICE = 16 * 1024  # compressed bytes decoded at a time: the output is checked between


def decode_request_body(body: bytes, content_encoding: str, limit: int) -> bytes | None:
    """The request body as the client meant it, for the request's inspection only: its
    Content-Encoding undone (a list such as ``gzip, br`` is undone last coding first). None
    when a coding is not in `DECODABLE`, the bytes do not decode, or the decoded body passes
    `limit` bytes (a small body may inflate a thousandfold: it is decoded a slice at a time and
    given up on as soon as it passes). RFC 9110, 8.4: the codings in the order applied."""
    data = body
    for coding in reversed(content_encoding.split(",")):
        try:
            decompress = _decompressor(coding)
        except ValueError:
            return None
        if decompress is None:
            continue
        out = bytearray()
        try:
            for at in range(0, len(data), _REQUEST_SLICE):
                out += decompress.decompress(data[at : at + _REQUEST_SLICE])
                if len(out) > limit:
                    return None
        except Exception:  # zlib.error, brotli.error, zstandard.ZstdError: not what it says
            return None
        data = bytes(out)
    return data


def _decompressor(encoding: str) -> Any:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS + 32)  # zlib or gzip header, auto-detected
    if encoding == "br":
        return _BrotliReader()
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj()
    raise ValueError(f"unsupported content-encoding {encoding!r}")


class _BrotliReader:
    """brotli's Decompressor behind the `decompress(data)` interface zlib's objects have."""

    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        out: bytes = self._d.process(data)
        return out
