"""2025 and 2026 usage shapes through the daemon, with the real openai SDK: the Responses
fingerprint in ``metadata``, server-side tools counted from output items, X search billed per
item fetched since 2026-09-21, and ``cost_in_nano_usd``.

The upstream is a loopback server answering canned bodies in xai-api.md's shapes (our own
numbers): the exact bytes of each era, which the simulator does not all speak. Expected ticks
are worked out by hand from xai-api.md's formulas and the override prices below.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web
from tenacity import wait_none

from daemon.app import Clocks, Daemon
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon, make_settings

# USD per 1M tokens → ticks per token: grok-4.3 1.25 / 0.20 / 2.50 → 12500 / 2000 / 25000;
# grok-4-0709 3.00 / 0.75 / 15.00 → 30000 / 7500 / 150000 (xai-api.md, "Models").
OVERRIDES = {
    "grok-4.3": {"input": 1.25, "cached_input": 0.2, "output": 2.5},
    "grok-4-0709": {"input": 3.0, "cached_input": 0.75, "output": 15.0},
}
JULY_2025 = 1751371200.0  # 2025-07-01T12:00:00Z
DAY_BEFORE_X_REPRICE = 1789905600.0  # 2026-09-20T12:00:00Z


class Canned:
    """A loopback upstream: each path answers the next canned reply queued for it, else 404."""

    def __init__(self) -> None:
        self.replies: dict[str, list[tuple[bytes, str]]] = {}
        self.url = ""

    def json(self, path: str, obj: dict[str, Any]) -> None:
        self.replies.setdefault(path, []).append((orjson.dumps(obj), "application/json"))

    def sse(self, path: str, events: list[dict[str, Any]]) -> None:
        """Typed events as xAI sends them: ``event:`` and ``data:`` lines, no ``[DONE]``."""
        body = b"".join(
            b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"
            for e in events
        )
        self.replies.setdefault(path, []).append((body, "text/event-stream"))

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        queue = self.replies.get(request.path)
        if not queue:
            return web.json_response({"code": "not-found", "error": "no reply"}, status=404)
        body, content_type = queue.pop(0)
        return web.Response(body=body, content_type=content_type)


@pytest.fixture
async def canned() -> AsyncIterator[Canned]:
    upstream = Canned()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    upstream.url = f"http://{host}:{port}"
    yield upstream
    await runner.cleanup()


@pytest.fixture
async def at_time(tmp_path: Path) -> AsyncIterator[Any]:
    """``await at_time(upstream_url, wall)``: a daemon whose calls start at ``wall``."""
    started: list[Daemon] = []

    async def start(upstream: str, wall: float) -> RunningDaemon:
        settings = make_settings(tmp_path, upstream, pricing__overrides=OVERRIDES)
        daemon = Daemon(settings, clocks=Clocks(wall=lambda: wall), retry_wait=wait_none())
        await daemon.start()
        started.append(daemon)
        return RunningDaemon(daemon)

    yield start
    for daemon in started:
        await daemon.stop()


def client(meter: RunningDaemon) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=meter.base_url, api_key=TEST_KEY, max_retries=0)


def response(
    model: str, usage: dict[str, Any], output: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    message = {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Done.", "annotations": []}],
    }
    return {
        "id": str(uuid.uuid4()),
        "object": "response",
        "created_at": 1764400000,
        "model": model,
        "status": "completed",
        "output": [*(output or []), message],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
        **extra,
    }


def tokens(inp: int, cached: int, out: int, reasoning: int = 0, **more: Any) -> dict[str, Any]:
    """A Responses usage: output already includes reasoning (total = input + output)."""
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": inp + out,
        "num_sources_used": 0,
        **more,
    }


# --- 1. the fingerprint at metadata.system_fingerprint ------------------------------------


async def fingerprint_change_rows(meter: RunningDaemon) -> list[tuple[Any, ...]]:
    await meter.daemon.ledger.drained()
    ledger = meter.daemon.ledger
    return await ledger.run_in_writer(
        lambda: [
            tuple(r)
            for r in ledger.db().execute(
                "select provider, model, old, new, kind from fingerprint_changes order by id"
            )
        ]
    )


async def test_responses_fingerprint_in_metadata_is_recorded_and_its_change_seen(
    canned: Canned, start_daemon: DaemonFactory
) -> None:
    # grok-4.3: (812 - 512)·12500 + 512·2000 + 140·25000 = 3,750,000 + 1,024,000 + 3,500,000
    usage = tokens(812, 512, 140, 96, num_server_side_tools_used=0, cost_in_usd_ticks=8_274_000)
    for fp in ("fp_3a9c01", "fp_77d2e0"):
        meta = {"system_fingerprint": fp}
        canned.json("/v1/responses", response("grok-4.3", usage, metadata=meta))
    meter = await start_daemon(canned.url, pricing__overrides=OVERRIDES)
    oai = client(meter)
    first = await oai.responses.create(model="grok-4.3", input="Which backend?")
    second = await oai.responses.create(model="grok-4.3", input="And now?")
    await oai.close()
    assert first.metadata == {"system_fingerprint": "fp_3a9c01"}  # the client sees it there too
    rows = await meter.rows(2)
    assert [r["fingerprint"] for r in rows] == ["fp_3a9c01", "fp_77d2e0"]
    assert [r["response_id"] for r in rows] == [first.id, second.id]
    assert rows[0]["computed_cost_ticks"] == rows[0]["reported_cost_ticks"] == 8_274_000
    labels = {"provider": "xai", "model": "grok-4.3"}
    assert meter.metric("xai_meter_fingerprint_changes_total", **labels, kind="new") == 1
    assert meter.metric("xai_meter_fingerprint_info", **labels, fingerprint="fp_77d2e0") == 1
    assert await fingerprint_change_rows(meter) == [
        ("xai", "grok-4.3", "fp_3a9c01", "fp_77d2e0", "new")
    ]


async def test_responses_stream_fingerprint_in_metadata(
    canned: Canned, start_daemon: DaemonFactory
) -> None:
    meta = {"system_fingerprint": "fp_be40a2"}
    usage = tokens(300, 0, 25, num_server_side_tools_used=0, cost_in_usd_ticks=4_375_000)
    final = response("grok-4.3", usage, metadata=meta)
    snapshot = {**final, "status": "in_progress", "output": [], "usage": None}
    canned.sse(
        "/v1/responses",
        [
            {"type": "response.created", "sequence_number": 0, "response": snapshot},
            {
                "type": "response.output_text.delta",
                "sequence_number": 1,
                "item_id": final["output"][0]["id"],
                "output_index": 0,
                "content_index": 0,
                "delta": "Done.",
                "metadata": meta,
            },
            {"type": "response.completed", "sequence_number": 2, "response": final},
        ],
    )
    meter = await start_daemon(canned.url)
    oai = client(meter)
    stream = await oai.responses.create(model="grok-4.3", input="Stream it.", stream=True)
    kinds = [event.type async for event in stream]
    await oai.close()
    assert kinds == ["response.created", "response.output_text.delta", "response.completed"]
    [row] = await meter.rows(1)
    assert (row["fingerprint"], row["stream"], row["metered"]) == ("fp_be40a2", 1, 1)
    assert (row["input_tokens"], row["output_tokens"]) == (300, 25)
    assert row["reported_cost_ticks"] == 4_375_000  # 300·12500 + 25·25000


# --- 2. tools counted from output items (2025 bodies: no details, no ticks) ---------------


def x_call(name: str, query: str) -> dict[str, Any]:
    return {
        "id": f"ctc_{uuid.uuid4().hex}",
        "type": "custom_tool_call",
        "call_id": f"xs_{uuid.uuid4().hex}",
        "name": name,
        "input": orjson.dumps({"query": query}).decode(),
        "status": "completed",
    }


def web_call(action: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"ws_{uuid.uuid4().hex}", "type": "web_search_call", "status": "completed",
            "action": action}  # fmt: skip


async def test_a_2025_body_is_billed_for_the_tool_calls_its_items_show(
    canned: Canned, at_time: Any
) -> None:
    items = [
        web_call({"type": "search", "query": "sqlite wal"}),
        web_call({"type": "open_page", "url": "https://sqlite.org/wal.html"}),
        x_call("x_keyword_search", "sqlite from:someone"),
        x_call("x_semantic_search", "posts about write-ahead logs"),
        x_call("x_user_search", "sqlite"),
        {"id": "ci_1", "type": "code_interpreter_call", "status": "completed", "code": "1+1"},
        {"id": "fc_1", "type": "function_call", "call_id": "f1", "name": "mine", "arguments": "{}"},
    ]
    usage = tokens(1500, 1000, 300, 120, num_server_side_tools_used=6)
    canned.json("/v1/responses", response("grok-4-0709", usage, items))
    meter = await at_time(canned.url, JULY_2025)
    oai = client(meter)
    answer = await oai.responses.create(
        model="grok-4", input="Research WAL.", tools=[{"type": "web_search"}, {"type": "x_search"}]
    )
    await oai.close()
    assert len(answer.output) == 8
    [row] = await meter.rows(1)
    assert row["started_at"] == JULY_2025
    assert orjson.loads(row["tool_calls"]) == {
        "web_search": 2,
        "x_search": 3,
        "code_interpreter": 1,
    }
    assert row["server_tool_calls"] == 6
    # tokens (1500 - 1000)·30000 + 1000·7500 + 300·150000 = 15,000,000 + 7,500,000 + 45,000,000;
    # tools (2 + 3 + 1) calls · $5/1k = 300,000,000 ticks ($0.03)
    assert row["computed_cost_ticks"] == 67_500_000 + 300_000_000
    assert (row["cost_ticks"], row["cost_source"]) == (367_500_000, "computed")
    assert row["reported_cost_ticks"] is None


async def test_a_bare_tool_count_is_recorded_as_unknown_calls(
    canned: Canned, start_daemon: DaemonFactory
) -> None:
    canned.json(
        "/v1/responses", response("grok-4.3", tokens(100, 0, 10, num_server_side_tools_used=2))
    )
    meter = await start_daemon(canned.url, pricing__overrides=OVERRIDES)
    oai = client(meter)
    await oai.responses.create(model="grok-4.3", input="Anything.")
    await oai.close()
    [row] = await meter.rows(1)
    assert (row["server_tool_calls"], orjson.loads(row["tool_calls"])) == (2, {"unknown": 2})
    assert row["computed_cost_ticks"] == 100 * 12500 + 10 * 25000  # no fee known: tokens only


# --- 3. X search per post and per profile fetched, from 2026-09-21 ------------------------

X_USAGE = tokens(
    2000,
    0,
    500,
    num_server_side_tools_used=2,
    server_side_tool_usage_details={
        "web_search_calls": 0,
        "x_search_calls": 2,
        "x_posts_fetched": 30,
        "x_users_fetched": 4,
        "code_interpreter_calls": 0,
        "file_search_calls": 0,
        "mcp_calls": 0,
        "document_search_calls": 0,
        "image_generation_calls": 0,
    },
)
X_TOKENS = 2000 * 12500 + 500 * 25000  # 37,500,000 ticks at grok-4.3's prices


@pytest.mark.parametrize(
    ("wall", "fees"),
    [
        (None, 30 * 50_000_000 + 4 * 100_000_000),  # today: $0.15 posts + $0.04 profiles
        (DAY_BEFORE_X_REPRICE, 2 * 50_000_000),  # the day before: 2 calls at $5/1k
    ],
    ids=["since 2026-09-21", "before"],
)
async def test_x_search_is_priced_by_the_rule_in_force_when_the_call_started(
    canned: Canned, start_daemon: DaemonFactory, at_time: Any, wall: float | None, fees: int
) -> None:
    canned.json("/v1/responses", response("grok-4.3", X_USAGE, [x_call("x_keyword_search", "q")]))
    if wall is None:
        meter = await start_daemon(canned.url, pricing__overrides=OVERRIDES)
    else:
        meter = await at_time(canned.url, wall)
    oai = client(meter)
    await oai.responses.create(model="grok-4.3", input="What do posts say?")
    await oai.close()
    [row] = await meter.rows(1)
    assert orjson.loads(row["tool_calls"]) == {
        "x_search": 2,
        "x_posts_fetched": 30,
        "x_users_fetched": 4,
    }
    assert row["server_tool_calls"] == 2  # calls; posts and profiles are kept beside them
    assert row["computed_cost_ticks"] == row["cost_ticks"] == X_TOKENS + fees
    assert row["cost_source"] == "computed"


# --- 6. cost_in_nano_usd --------------------------------------------------------------------


async def test_nano_usd_is_the_reported_cost_in_every_dialect(
    canned: Canned, start_daemon: DaemonFactory
) -> None:
    chat_usage = {"prompt_tokens": 200, "completion_tokens": 20, "total_tokens": 220,
                  "cost_in_nano_usd": 300_000}  # fmt: skip
    canned.json(
        "/v1/chat/completions",
        {
            "id": str(uuid.uuid4()),
            "object": "chat.completion",
            "created": 1764400000,
            "model": "grok-4.3",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Yes."},
                    "finish_reason": "stop",
                }
            ],
            "usage": chat_usage,
            "system_fingerprint": "fp_c4",
        },
    )
    canned.json(
        "/v1/responses",
        response("grok-4.3", tokens(200, 0, 20, cost_in_nano_usd=300_000, cost_in_usd_ticks=None)),
    )
    canned.json(
        "/v1/images/generations",
        {"data": [{"url": "https://x/1.png"}, {"url": "https://x/2.png"}],
         "usage": {"cost_in_nano_usd": 40_000_000}},
    )  # fmt: skip
    meter = await start_daemon(canned.url, pricing__overrides=OVERRIDES)
    oai = client(meter)
    await oai.chat.completions.create(
        model="grok-4.3", messages=[{"role": "user", "content": "Cheap?"}]
    )
    await oai.responses.create(model="grok-4.3", input="Cheap?")
    await oai.images.generate(model="grok-imagine-image", prompt="a meter", n=2)
    await oai.close()
    rows = await meter.rows(3)
    # 300,000 nano-USD = 3,000,000 ticks = 200·12500 + 20·25000, the computed cost exactly
    for row in rows[:2]:
        assert row["reported_cost_ticks"] == row["cost_ticks"] == 3_000_000
        assert (row["computed_cost_ticks"], row["cost_source"]) == (3_000_000, "reported")
    # 40,000,000 nano-USD = $0.04 = 2 images at $0.02
    assert (rows[2]["images"], rows[2]["reported_cost_ticks"]) == (2, 400_000_000)
    assert rows[2]["cost_source"] == "reported"
