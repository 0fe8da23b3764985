"""The proxy is transparent for shapes and methods no proto of ours declares: a real grpc.aio
upstream here echoes what it got, and the client must see exactly what that upstream sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import orjson
import pytest
from xai_sdk.proto import chat_pb2

from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon

AUTH = (("authorization", f"Bearer {TEST_KEY}"),)


class _Echo(grpc.GenericRpcHandler):  # type: ignore[misc]
    """An upstream with one method per shape; none of them is in xai-sdk's protos."""

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        if method == "/test.Echo/Bidi":
            return grpc.stream_stream_rpc_method_handler(_bidi)
        if method == "/test.Echo/Upload":
            return grpc.stream_unary_rpc_method_handler(_upload)
        if method == "/test.Echo/Fail":
            return grpc.unary_unary_rpc_method_handler(_fail)
        if method in ("/test.Echo/Seen", "/xai_api.Chat/GetCompletion"):
            return grpc.unary_unary_rpc_method_handler(_seen)
        return None


async def _bidi(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
    await context.send_initial_metadata((("x-initial", "i"),))
    async for message in requests:
        yield b"echo:" + message
    context.set_trailing_metadata((("x-trailer", "t"), ("x-raw-bin", b"\x00\xff")))


async def _upload(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    return b"|".join([m async for m in requests])


async def _fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not for you", (("x-why", "because"),))
    raise AssertionError("unreachable")


async def _seen(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """What arrived: the metadata (binary values in hex), the deadline left, the bytes."""
    return orjson.dumps(
        {
            "metadata": [
                [k, v.hex() if isinstance(v, bytes) else v]
                for k, v in context.invocation_metadata()
            ],
            "remaining": context.time_remaining(),
            "request": request.hex(),
        }
    )


@pytest.fixture
async def echo_meter(start_grpc_daemon: DaemonFactory) -> AsyncIterator[RunningDaemon]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_Echo(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield await start_grpc_daemon(grpc__upstream=f"http://127.0.0.1:{port}")
    finally:
        await server.stop(None)


async def test_bidi_stream_and_both_metadata_sets_pass_as_sent(echo_meter: RunningDaemon) -> None:
    async with grpc.aio.insecure_channel(echo_meter.grpc_address) as channel:
        call = channel.stream_stream("/test.Echo/Bidi")(iter([b"a", b"", b"\x00c"]), metadata=AUTH)
        answers = [m async for m in call]
        assert answers == [b"echo:a", b"echo:", b"echo:\x00c"]
        assert tuple(await call.initial_metadata()) == (("x-initial", "i"),)
        assert tuple(await call.trailing_metadata()) == (
            ("x-trailer", "t"),
            ("x-raw-bin", b"\x00\xff"),
        )
        assert await call.code() is grpc.StatusCode.OK
    [row] = await echo_meter.rows(1)
    assert (row["path"], row["endpoint"], row["status"], row["transport"], row["metered"]) == (
        "/test.Echo/Bidi",
        "other",
        200,
        "grpc",
        1,
    )


async def test_client_streaming_passes(echo_meter: RunningDaemon) -> None:
    async with grpc.aio.insecure_channel(echo_meter.grpc_address) as channel:
        answer = await channel.stream_unary("/test.Echo/Upload")(
            iter([b"one", b"two", b"three"]), metadata=AUTH
        )
    assert answer == b"one|two|three"
    [row] = await echo_meter.rows(1)
    assert (row["path"], row["status"], row["error"]) == ("/test.Echo/Upload", 200, None)


async def test_status_details_and_trailers_of_an_error_pass_as_sent(
    echo_meter: RunningDaemon,
) -> None:
    async with grpc.aio.insecure_channel(echo_meter.grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/test.Echo/Fail")(b"x", metadata=AUTH)
    err = caught.value
    assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED, "not for you")
    assert tuple(err.trailing_metadata()) == (("x-why", "because"),)
    [row] = await echo_meter.rows(1)
    assert (row["status"], row["error"], row["upstream_error"]) == (
        403,
        "http_error",
        "PERMISSION_DENIED",
    )


async def test_metadata_deadline_and_unknown_fields_cross_untouched(
    echo_meter: RunningDaemon,
) -> None:
    request = chat_pb2.GetCompletionsRequest(model="grok-4.3").SerializeToString()
    unknown = request + b"\xf8\xff\x03\x07"  # field 65535 (varint 7): in no proto of today
    async with grpc.aio.insecure_channel(echo_meter.grpc_address) as channel:
        answer = await channel.unary_unary("/xai_api.Chat/GetCompletion")(
            unknown,
            timeout=30,
            metadata=(
                *AUTH,
                ("xai-sdk-version", "python/9.9"),
                ("x-meter-app", "checkout"),
                ("x-custom-bin", b"\x01\x02"),
            ),
        )
    seen = orjson.loads(answer)
    assert bytes.fromhex(seen["request"]) == unknown
    metadata = dict(seen["metadata"])
    assert metadata["authorization"] == f"Bearer {TEST_KEY}"
    assert metadata["xai-sdk-version"] == "python/9.9"
    assert "x-meter-app" not in metadata  # ours: read, never forwarded
    assert metadata["x-custom-bin"] == "0102"
    assert 25 < seen["remaining"] <= 30  # the client's deadline, less the hop
    [row] = await echo_meter.rows(1)
    # the upstream's answer is no chat completion: relayed as sent, and unmetered
    assert (row["app"], row["requested_model"], row["metered"], row["unmetered_reason"]) == (
        "checkout",
        "grok-4.3",
        0,
        "parser_error",
    )
