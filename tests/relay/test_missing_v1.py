"""A client's base URL without its /v1 (`daemon.missing_v1`): the official OpenAI SDK pointed
at ``http://HOST:PORT`` gets the relay's 404 as before, the daemon logs the fix once per
endpoint (and upstream) at warning, and counts every such call."""

from __future__ import annotations

from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from structlog.testing import capture_logs

from daemon import simulator
from daemon.missing_v1 import DOUBLED_FIX, FIX
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon

CHAT: dict[str, Any] = {"model": "grok-3", "messages": [{"role": "user", "content": "hello"}]}
METRIC = "xai_meter_missing_v1_total"
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def told(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == "missing_v1"]


async def test_a_missing_v1_is_told_once_per_endpoint_and_counted(meter: RunningDaemon) -> None:
    host = meter.url.removeprefix("http://")
    client = openai.AsyncOpenAI(api_key=TEST_KEY, base_url=meter.url, max_retries=0)
    with capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(openai.NotFoundError) as missed:
                await client.chat.completions.create(**CHAT)
        with pytest.raises(openai.NotFoundError):
            await client.models.list()
        # the same SDK with its /v1: no warning, no count
        right = openai.AsyncOpenAI(api_key=TEST_KEY, base_url=meter.base_url, max_retries=0)
        await right.chat.completions.create(**CHAT)
    await client.close()
    await right.close()
    assert missed.value.status_code == 404  # as any path no upstream serves (never rewritten)
    fix = FIX.format(base=f"http://{host}/v1", root=f"http://{host}")
    assert told(logs) == [
        {
            "event": "missing_v1",
            "log_level": "warning",
            "path": "/chat/completions",
            "endpoint": "chat.completions",
            "fix": fix,
        },
        {
            "event": "missing_v1",
            "log_level": "warning",
            "path": "/models",
            "endpoint": "models",
            "fix": fix,
        },
    ]
    assert fix == (
        f"set the client's base_url to http://{host}/v1 (OpenAI and xAI SDKs, LangChain, most "
        "OpenAI-compatible clients); the Anthropic SDK is the exception: it adds /v1 itself, "
        f"so it takes http://{host}"
    )
    assert meter.metric(METRIC, endpoint="chat.completions") == 3.0
    assert meter.metric(METRIC, endpoint="models") == 1.0
    assert meter.metric(METRIC, endpoint="other") is None
    assert len(await meter.rows(1)) == 1  # the right call's row; a 404 of ours is no call


async def test_the_404_is_unchanged_and_other_paths_are_not_counted(
    meter: RunningDaemon,
) -> None:
    host = meter.url.removeprefix("http://")
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{meter.url}/responses", json={}) as r:
                assert r.status == 404
                assert await r.json() == {
                    "error": "xai-meter relays only paths under a configured upstream's /v1/; "
                    f"'/responses' is not one. Base URLs here: http://{host}/v1.",
                    "code": "not_found",
                    "source": "xai-meter",
                }
            for path in ("/favicon.ico", "/v2/chat/completions", "/"):
                async with http.get(f"{meter.url}{path}") as r:
                    assert r.status == 404
    assert [(e["path"], e["endpoint"]) for e in told(logs)] == [("/responses", "responses")]
    assert meter.metric(METRIC, endpoint="responses") == 1.0
    assert meter.metric(METRIC, endpoint="other") is None


async def test_a_prefixed_upstream_is_told_its_own_base_url(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(
        sim.url, upstreams={"openai": {"base_url": sim.url, "prefix": "/openai"}}
    )
    host = meter.url.removeprefix("http://")
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as http:
            for path in ("/openai/chat/completions", "/chat/completions"):
                async with http.post(f"{meter.url}{path}", json=CHAT) as r:
                    assert r.status == 404
    assert [(e["path"], e["fix"]) for e in told(logs)] == [
        (
            "/openai/chat/completions",
            FIX.format(base=f"http://{host}/openai/v1", root=f"http://{host}/openai"),
        ),
        ("/chat/completions", FIX.format(base=f"http://{host}/v1", root=f"http://{host}")),
    ]
    assert meter.metric(METRIC, endpoint="chat.completions") == 2.0


DOUBLED = "xai_meter_doubled_v1_total"


async def test_a_doubled_v1_is_told_once_on_the_upstreams_404_and_counted(
    meter: RunningDaemon,
) -> None:
    """The Anthropic SDK given ``.../v1`` sends /v1/v1/messages: it routes, and the upstream
    answers its own 404 (relayed as it came); the daemon logs the fix once and counts each."""
    client = anthropic.AsyncAnthropic(api_key=TEST_KEY, base_url=meter.base_url, max_retries=0)
    with capture_logs() as logs:
        for _ in range(2):
            with pytest.raises(anthropic.NotFoundError) as missed:
                await client.messages.create(
                    model="grok-3", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
                )
        # the same SDK without the /v1: no warning, no count
        right = anthropic.AsyncAnthropic(api_key=TEST_KEY, base_url=meter.url, max_retries=0)
        await right.messages.create(
            model="grok-3", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
        # a 404 of a path with one /v1 is not this mistake
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{meter.base_url}/nothing-here", headers=AUTH) as r,
        ):
            assert r.status == 404
    await client.close()
    await right.close()
    assert missed.value.status_code == 404
    assert "xai-meter" not in missed.value.message  # the upstream's own answer, untouched
    assert [e for e in logs if e["event"] == "doubled_v1"] == [
        {
            "event": "doubled_v1",
            "log_level": "warning",
            "path": "/v1/v1/messages",
            "endpoint": "messages",
            "provider": "xai",
            "fix": DOUBLED_FIX,
        }
    ]
    assert DOUBLED_FIX == (
        "remove the /v1 at the end of the client's base_url: its SDK adds /v1 itself (the "
        "Anthropic SDK takes http://HOST:PORT, or http://HOST:PORT/PREFIX for a prefixed "
        "upstream)"
    )
    assert meter.metric(DOUBLED, endpoint="messages") == 2.0
    assert meter.metric(DOUBLED, endpoint="other") is None
    assert told(logs) == []
    rows = await meter.rows(4)
    assert [(r["path"], r["status"]) for r in rows] == [
        ("/v1/v1/messages", 404),
        ("/v1/v1/messages", 404),
        ("/v1/messages", 200),
        ("/v1/nothing-here", 404),
    ]
