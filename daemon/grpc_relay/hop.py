"""What crosses the gRPC hop: metadata both ways, the server's and channel's options, TLS roots.

Client metadata goes upstream minus the keys that never cross a hop: gRPC's reserved ones
(``grpc-*``; the channel sets its own), HTTP/2 pseudo-headers, HTTP/1 connection headers (grpc
refuses them in metadata), ``user-agent`` (the channel sends its own) and our own ``x-meter-*``
controls (``x-meter-app`` is read as the call's app tag). The upstream's initial and trailing
metadata come back under the same rule. Values pass as they are, binary ``-bin`` ones included.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

Metadata = tuple[tuple[str, str | bytes], ...]

# Keys that never cross the hop: gRPC's own (the channel sets them), HTTP/2 pseudo-headers and
# HTTP/1 connection headers (a client may send them; grpc refuses them in metadata), and
# user-agent (the channel sends its own).
_DROP = frozenset(
    {
        "user-agent",
        "te",
        "content-type",
        "content-length",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    }
)
_OURS = "x-meter-"
_APP_LABEL_MAX = 64
# No size limit of our own: the upstream enforces its own (xAI: 50 MB), and an image answer can
# be large. The upstream channel keeps its connection alive as the SDK does.
_LIMITS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
SERVER_OPTIONS = [
    *_LIMITS,
    # Without this, Linux lets a second server bind the same port silently (SO_REUSEPORT).
    ("grpc.so_reuseport", 0),
]
CHANNEL_OPTIONS = [
    *_LIMITS,
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def forward(incoming: Any) -> tuple[Metadata, str | None, str | None]:
    """The client's metadata (pairs) as sent upstream, the client's key (``authorization:
    Bearer <key>``, for its key id; never stored), and its ``x-meter-app`` label (<= 64)."""
    out: list[tuple[str, str | bytes]] = []
    key = app = None
    for item in incoming:
        name, value = item[0], item[1]
        if name in _DROP or name[:1] == ":" or name.startswith("grpc-"):
            continue
        if name.startswith(_OURS):
            if name == "x-meter-app" and isinstance(value, str) and value:
                app = value[:_APP_LABEL_MAX]
            continue
        if name == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                key = token.strip()
        out.append((name, value))
    return tuple(out), key, app


def back(metadata: Any) -> Metadata:
    """Metadata the upstream sent, as the client may be given it (reserved keys dropped)."""
    if not metadata:
        return ()
    return tuple(
        (k, v) for k, v in metadata if k not in _DROP and k[:1] != ":" and not k.startswith("grpc-")
    )


def system_roots() -> bytes | None:
    """The system's CA certificates, PEM (``SSL_CERT_FILE`` or OpenSSL's default file), as the
    HTTP relay trusts them; None (grpc's own bundle) when there is no such file."""
    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile):
        if path and os.path.isfile(path):
            with open(path, "rb") as f:
                return f.read()
    return None
