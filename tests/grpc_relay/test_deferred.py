"""Deferred jobs over gRPC that end without a result: a ``GetDeferredCompletion`` or
``GetDeferredVideo`` poll answering FAILED or EXPIRED bills nothing and ends its start's row so
(``failed`` / ``expired``), as REST's polls do, through the real xai-sdk."""

from __future__ import annotations

from typing import Any

import pytest
from xai_sdk import AsyncClient
from xai_sdk.chat import user
from xai_sdk.video import VideoGenerationError

from daemon import simulator
from daemon.testing import TEST_KEY, RunningDaemon

COLUMNS = (
    "path",
    "endpoint",
    "status",
    "deferred",
    "deferred_state",
    "linked_id",
    "input_tokens",
    "video_seconds",
    "reported_cost_ticks",
    "cost_ticks",
    "upstream_error",
    "error",
    "metered",
)


def client(meter: RunningDaemon, *metadata: tuple[str, str]) -> AsyncClient:
    return AsyncClient(
        api_key=TEST_KEY,
        api_host=meter.grpc_address,
        use_insecure_channel=True,
        metadata=metadata,
    )


def pick(row: dict[str, Any]) -> dict[str, Any]:
    return {c: row[c] for c in COLUMNS}


async def ended_rows(meter: RunningDaemon) -> tuple[dict[str, Any], dict[str, Any]]:
    """The start's row (as the ledger rewrote it) and the poll's: the only two."""
    await meter.rows(2)
    await meter.daemon.ledger.drained()
    start, poll = await meter.rows(2)
    return start, poll


@pytest.mark.parametrize(("outcome", "raised"), [("failed", ValueError), ("expired", RuntimeError)])
async def test_a_deferred_completion_that_fails_or_expires_bills_nothing(
    grpc_meter: RunningDaemon, grpc_sim: simulator.GrpcSimulator, outcome: str, raised: type
) -> None:
    grpc_sim.state.deferred_polls = 0
    async with client(grpc_meter, ("x-sim-deferred-outcome", outcome)) as sdk:
        chat = sdk.chat.create(model="grok-4.3")
        chat.append(user("Name a prime."))
        with pytest.raises(raised):  # xai-sdk: FAILED is an unknown status, EXPIRED an error
            await chat.defer()
    start, poll = await ended_rows(grpc_meter)
    nothing = {"input_tokens": None, "video_seconds": None, "reported_cost_ticks": None}
    assert pick(start) == {
        "path": "/xai_api.Chat/StartDeferredCompletion",
        "endpoint": "chat.completions",
        "status": 200,
        "deferred": 1,
        "deferred_state": outcome,
        "linked_id": None,
        **nothing,
        "cost_ticks": None,
        "upstream_error": None,
        "error": None,
        "metered": 1,
    }
    assert pick(poll) == {
        "path": "/xai_api.Chat/GetDeferredCompletion",
        "endpoint": "chat.deferred",
        "status": 200,
        "deferred": 0,
        "deferred_state": outcome,
        "linked_id": start["id"],
        **nothing,
        "cost_ticks": None,
        "upstream_error": None,
        "error": None,
        "metered": 1,
    }


@pytest.mark.parametrize(
    ("outcome", "raised", "code"),
    [
        ("failed", VideoGenerationError, "moderation_blocked"),
        ("expired", RuntimeError, None),
    ],
)
async def test_a_video_that_fails_or_expires_bills_nothing(
    grpc_meter: RunningDaemon,
    grpc_sim: simulator.GrpcSimulator,
    outcome: str,
    raised: type,
    code: str | None,
) -> None:
    grpc_sim.state.deferred_polls = 0
    async with client(grpc_meter, ("x-sim-video-outcome", outcome)) as sdk:
        with pytest.raises(raised):
            await sdk.video.generate("a meter spinning", "grok-imagine-video", duration=4)
    start, poll = await ended_rows(grpc_meter)
    assert (start["path"], start["endpoint"], start["deferred"], start["deferred_state"]) == (
        "/xai_api.Video/GenerateVideo",
        "videos.generations",
        1,
        outcome,
    )
    assert pick(poll) == {
        "path": "/xai_api.Video/GetDeferredVideo",
        "endpoint": "videos.result",
        "status": 200,
        "deferred": 0,
        "deferred_state": outcome,
        "linked_id": start["id"],
        "input_tokens": None,
        "video_seconds": None,
        "reported_cost_ticks": None,
        "cost_ticks": None,
        "upstream_error": code,
        "error": None,
        "metered": 1,
    }


async def test_a_video_done_over_grpc_is_billed_by_its_seconds(
    grpc_meter: RunningDaemon, grpc_sim: simulator.GrpcSimulator
) -> None:
    """The DONE poll reads the video as REST does: its seconds, priced from the catalog, beside
    the cost xAI reported."""
    grpc_sim.state.deferred_polls = 0
    async with client(grpc_meter) as sdk:
        video = await sdk.video.generate("a meter spinning", "grok-imagine-video", duration=4)
    assert video.duration == 4
    start, poll = await ended_rows(grpc_meter)
    assert start["deferred_state"] == "completed"
    assert (poll["deferred_state"], poll["linked_id"], poll["model"]) == (
        "result",
        start["id"],
        "grok-imagine-video",
    )
    assert (poll["video_seconds"], poll["catalog_rate"], poll["reported_cost_ticks"]) == (
        4.0,
        "video",
        4 * 500_000_000,  # $0.05 a second at 480p
    )
    assert (poll["cost_ticks"], poll["cost_source"], poll["metered"]) == (
        4 * 500_000_000,
        "reported",
        1,
    )


@pytest.mark.parametrize(
    ("resolution", "per_second"), [("720p", 700_000_000), ("480p", 500_000_000)]
)
async def test_a_grpc_video_is_priced_at_the_resolution_it_asked(
    grpc_meter: RunningDaemon, grpc_sim: simulator.GrpcSimulator, resolution: str, per_second: int
) -> None:
    """``GenerateVideo``'s resolution is kept on its start (``video_request``, as REST's POST
    keeps it), carried to the DONE poll, and prices it: the computed cost is the one xAI (the
    simulator) reports, not the default resolution's."""
    grpc_sim.state.deferred_polls = 0
    async with client(grpc_meter) as sdk:
        video = await sdk.video.generate(
            "a meter spinning", "grok-imagine-video", duration=3, resolution=resolution
        )
    assert video.duration == 3
    start, poll = await ended_rows(grpc_meter)
    assert start["video_request"] == f"generations/{resolution}/0"
    assert (poll["video_request"], poll["catalog_rate"], poll["video_seconds"]) == (
        f"generations/{resolution}/0",
        f"video:{resolution}",
        3.0,
    )
    assert (poll["reported_cost_ticks"], poll["computed_cost_ticks"], poll["cost_ticks"]) == (
        3 * per_second,
        3 * per_second,
        3 * per_second,
    )
