"""An https grpc.upstream is reached over TLS, trusting the system's CA certificates (here:
``SSL_CERT_FILE`` naming a test CA), as api.x.ai:443 is."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from daemon.testing import TEST_KEY, DaemonFactory


class _Hello(grpc.GenericRpcHandler):  # type: ignore[misc]
    def service(self, details: grpc.HandlerCallDetails) -> Any:
        async def hello(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return b"tls:" + request

        return grpc.unary_unary_rpc_method_handler(hello)


def _certificate(tmp_path: Path) -> tuple[bytes, bytes]:
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is not installed, and CI must test the TLS upstream")
        pytest.skip("openssl is not installed: the TLS upstream is NOT tested")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return key.read_bytes(), cert.read_bytes()


async def test_https_upstream_is_tls_with_the_system_roots(
    start_grpc_daemon: DaemonFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = _certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_Hello(),))
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    await server.start()
    try:
        meter = await start_grpc_daemon(grpc__upstream=f"https://localhost:{port}")
        async with grpc.aio.insecure_channel(meter.grpc_address) as channel:
            answer = await channel.unary_unary("/test.Tls/Hello")(
                b"hi", metadata=(("authorization", f"Bearer {TEST_KEY}"),)
            )
        assert answer == b"tls:hi"
        [row] = await meter.rows(1)
        assert (row["path"], row["status"], row["error"]) == ("/test.Tls/Hello", 200, None)
    finally:
        await server.stop(None)
