"""xai-sdk's Batch API (``client.batch``, xAI's ``BatchMgmt``) through the daemon's gRPC listener:
every call one unbilled ``batches`` row, each result of a results page one ``batches.result`` row
exactly as REST's pages make them, billed once across gRPC, REST and a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from xai_sdk import AsyncClient
from xai_sdk.chat import user
from xai_sdk.proto import batch_pb2, batch_pb2_grpc, image_pb2, video_pb2

from daemon import simulator
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon

AUTH = (("authorization", f"Bearer {TEST_KEY}"),)
PINNED = (("x-sim-prompt-tokens", "100"), ("x-sim-cached-tokens", "0"))
LIST = "/xai_api.BatchMgmt/ListBatchResults"
# grok-4.3's listing prices (ticks per token: $1.25 / $2.50 per 1M); the simulator answers
# "Name a prime." with 45 output tokens (15 text + 30 reasoning); the batch discount halves it
# (the simulator's batch_ratio and the catalog's batch_discount agree: 50%).
P_IN, P_OUT = 12_500, 25_000
PROMPT, OUTPUT, REASONING = 100, 45, 30
CHAT = (PROMPT * P_IN + OUTPUT * P_OUT) // 2  # 1_187_500
IMAGE = 2 * 200_000_000 // 2  # two grok-imagine-image images at $0.02, halved
VIDEO = 4 * 500_000_000 // 2  # 4 s of grok-imagine-video at 480p, $0.05/s, halved
COLUMNS = (
    "endpoint",
    "method",
    "path",
    "status",
    "transport",
    "linked_id",
    "response_id",
    "model",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "images",
    "video_seconds",
    "catalog_rate",
    "reported_cost_ticks",
    "computed_cost_ticks",
    "cost_ticks",
    "cost_source",
    "upstream_error",
    "metered",
    "duration_ms",
)


@pytest.fixture
async def priced(
    start_grpc_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> RunningDaemon:
    """A gRPC daemon whose prices are in force (so each row has its computed cost too)."""
    monkeypatch.setenv("XAI_API_KEY", "xai-env-key")
    meter = await start_grpc_daemon(pricing__refresh=True)
    async with asyncio.timeout(5):
        await meter.daemon.prices.updated.wait()
    return meter


def sdk(meter: RunningDaemon) -> AsyncClient:
    return AsyncClient(
        api_key=TEST_KEY, api_host=meter.grpc_address, use_insecure_channel=True, metadata=PINNED
    )


def lines(client: AsyncClient) -> list[Any]:
    """Two chats (the SDK's own chat objects), two images, a video, a chat on no model."""
    chats = []
    for request_id, model in (("chat-1", "grok-4.3"), ("chat-2", "grok-4.3"), ("bad-1", "nope")):
        chat = client.chat.create(model=model, batch_request_id=request_id)
        chat.append(user("Name a prime."))
        chats.append(chat)
    image = image_pb2.GenerateImageRequest(prompt="a meter", model="grok-imagine-image", n=2)
    video = video_pb2.GenerateVideoRequest(prompt="a meter spinning", duration=4)
    return [
        chats[0],
        chats[1],
        batch_pb2.BatchRequest(batch_request_id="img-1", image_request=image),
        batch_pb2.BatchRequest(batch_request_id="vid-1", video_request=video),
        chats[2],
    ]


async def pages(client: AsyncClient, batch_id: str) -> list[Any]:
    """Every result page, three results a page."""
    found = [await client.batch.list_batch_results(batch_id, limit=3)]
    while found[-1].pagination_token is not None:
        token = found[-1].pagination_token
        found.append(await client.batch.list_batch_results(batch_id, 3, token))
    return found


@pytest.fixture
async def channel(priced: RunningDaemon) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(priced.grpc_address) as chan:
        yield chan


def pick(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c] for c in COLUMNS)


def sent(state: Any, index: int = -1) -> bytes:
    """The one message the simulator sent for a unary call, its 5-byte gRPC prefix dropped."""
    framed: bytes = state.sent[index]
    return framed[5:]


async def test_results_over_grpc_are_rest_rows_billed_once_across_transports_and_restarts(
    priced: RunningDaemon,
    start_grpc_daemon: DaemonFactory,
    grpc_sim: simulator.GrpcSimulator,
    channel: grpc.aio.Channel,
) -> None:
    meter = priced
    async with sdk(meter) as client:
        made = await client.batch.create("nightly")
        await client.batch.add(made.batch_id, lines(client))
        first = await pages(client, made.batch_id)
        assert first[-1].proto.SerializeToString() == sent(grpc_sim.state)  # bytes untouched
        again = await pages(client, made.batch_id)
    batch_id = made.batch_id
    assert [[r.batch_request_id for r in p.results] for p in first] == [
        ["chat-1", "chat-2", "img-1"],
        ["vid-1", "bad-1"],
    ]
    assert [p.proto for p in again] == [p.proto for p in first]
    answer = first[0].results[0].response
    assert (answer.usage.prompt_tokens, answer.usage.cost_in_usd_ticks) == (PROMPT, CHAT)
    assert answer.usage.completion_tokens + answer.usage.reasoning_tokens == OUTPUT
    one = await batch_pb2_grpc.BatchMgmtStub(channel).GetBatchRequestResult(
        batch_pb2.GetBatchRequestResultRequest(batch_id=batch_id, batch_request_id="chat-2"),
        metadata=AUTH,
    )
    assert one.result == first[0].proto.results[1]

    # create, add, 2 pages, 2 pages again, one result: 7 calls, and one row per result
    rows = await meter.rows(12)
    assert len(rows) == 12
    calls = [r for r in rows if r["endpoint"] == "batches"]
    assert [(r["path"].rsplit("/", 1)[-1], r["transport"], r["cost_ticks"]) for r in calls] == [
        ("CreateBatch", "grpc", None),
        ("AddBatchRequests", "grpc", None),
        ("ListBatchResults", "grpc", None),
        ("ListBatchResults", "grpc", None),
        ("ListBatchResults", "grpc", None),
        ("ListBatchResults", "grpc", None),
        ("GetBatchRequestResult", "grpc", None),
    ]
    assert all(r["input_tokens"] is None and r["metered"] == 1 for r in calls)
    results = {r["response_id"]: r for r in rows if r["endpoint"] == "batches.result"}
    assert list(results) == ["chat-1", "chat-2", "img-1", "vid-1", "bad-1"]  # in page order
    head = ("batches.result", "POST", LIST, 200, "grpc", batch_id)
    chat = ("grok-4.3", PROMPT, 0, OUTPUT, REASONING, 0, None, None, CHAT, CHAT, CHAT, "reported")
    assert pick(results["chat-1"]) == (*head, "chat-1", *chat, None, 1, None)
    assert pick(results["chat-2"]) == (*head, "chat-2", *chat, None, 1, None)
    assert pick(results["img-1"]) == (
        *head, "img-1", "grok-imagine-image", 0, 0, 0, 0, 2, None, None,
        IMAGE, IMAGE, IMAGE, "reported", None, 1, None,
    )  # fmt: skip
    assert pick(results["vid-1"]) == (  # a page carries no request: no resolution, no guess
        *head, "vid-1", "grok-imagine-video", 0, 0, 0, 0, 0, 4.0, "video:unknown",
        VIDEO, None, VIDEO, "reported", None, 1, None,
    )  # fmt: skip
    assert pick(results["bad-1"]) == (
        *head, "bad-1", None, None, None, None, None, None, None, None,
        None, None, None, None, "5", 1, None,
    )  # fmt: skip
    assert results["chat-1"]["fingerprint"] == "fp_43e4f5a604"
    assert results["chat-1"]["service_tier"] == "default"
    assert {r["key_id"] for r in rows} == {meter.daemon.keys.key_id(TEST_KEY)}
    m = meter.metric
    assert m("xai_meter_batch_cost_usd_total", provider="xai", model="grok-4.3") == (
        pytest.approx(2 * CHAT / 1e10)
    )
    assert m("xai_meter_batch_results_total", provider="xai", model="grok-4.3", outcome="ok") == 2
    assert m("xai_meter_batch_results_total", provider="xai", model="none", outcome="error") == 1

    # The same results over REST, through the same daemon: two pages and one result, no new row
    # billed.
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TEST_KEY}"}) as http:
        url = f"{meter.base_url}/batches/{batch_id}/results"
        got = []
        for params in ({"limit": "3"}, {"limit": "3", "pagination_token": "3"}):
            async with http.get(url, params=params) as resp:
                assert resp.status == 200
                got += [r["batch_request_id"] for r in (await resp.json())["results"]]
        assert got == list(results)
        async with http.get(f"{url}/chat-1") as resp:
            assert resp.status == 200
    await meter.daemon.ledger.drained()
    rows = await meter.rows(15)
    assert len(rows) == 15
    assert [(r["method"], r["transport"], r["endpoint"]) for r in rows[-3:]] == [
        ("GET", "http", "batches")
    ] * 3
    assert sum(r["endpoint"] == "batches.result" for r in rows) == 5
    await meter.daemon.stop()

    # A restart remembers every result billed: the pages again over gRPC bill nothing.
    second = await start_grpc_daemon()
    async with sdk(second) as client:
        assert [p.proto for p in await pages(client, batch_id)] == [p.proto for p in first]
    await second.daemon.ledger.drained()
    rows = await second.rows(2)
    assert len(rows) == 17
    assert [r["path"] for r in rows[-2:]] == [LIST, LIST]
    assert sum(r["endpoint"] == "batches.result" for r in rows) == 5
    assert sum(r["cost_ticks"] or 0 for r in rows) == 2 * CHAT + IMAGE + VIDEO


async def test_one_video_result_is_priced_by_the_request_beside_it(
    priced: RunningDaemon, channel: grpc.aio.Channel
) -> None:
    """``GetBatchRequestResult`` answers the line's ``BatchRequest`` beside its result: a 720p
    video is priced at 720p (computed = reported, half of $0.07 a second), not at 480p."""
    video = video_pb2.GenerateVideoRequest(
        prompt="a meter", duration=4, resolution=video_pb2.VIDEO_RESOLUTION_720P
    )
    async with sdk(priced) as client:
        made = await client.batch.create("nightly")
        await client.batch.add(
            made.batch_id, [batch_pb2.BatchRequest(batch_request_id="vid-1", video_request=video)]
        )
    one = await batch_pb2_grpc.BatchMgmtStub(channel).GetBatchRequestResult(
        batch_pb2.GetBatchRequestResultRequest(batch_id=made.batch_id, batch_request_id="vid-1"),
        metadata=AUTH,
    )
    half = 4 * 700_000_000 // 2
    assert one.result.response.video_response.usage.cost_in_usd_ticks == half
    rows = await priced.rows(4)
    [row] = [r for r in rows if r["endpoint"] == "batches.result"]
    assert (row["catalog_rate"], row["video_request"]) == ("video:720p", "generations/720p/0")
    assert (row["reported_cost_ticks"], row["computed_cost_ticks"], row["cost_ticks"]) == (
        half,
        half,
        half,
    )
