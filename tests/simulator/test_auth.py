"""API keys (missing, invalid, described by `/v1/api-key`), tokenize-text, unknown routes."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import orjson
import pytest

from daemon.simulator import Simulator
from daemon.testing import USER_MESSAGES

USER: Any = USER_MESSAGES


@pytest.mark.asyncio
async def test_auth_missing_and_invalid_keys(sim: Simulator) -> None:
    async with aiohttp.ClientSession(base_url=sim.url) as bare:
        async with bare.get("/v1/language-models") as resp:
            assert resp.status == 401
            assert set(await resp.json()) == {"code", "error"}
        async with bare.get("/v1/models", headers={"x-api-key": "anything"}) as resp:
            assert resp.status == 200
    async with openai.AsyncOpenAI(
        base_url=sim.url + "/v1", api_key="invalid-key", max_retries=0
    ) as bad:
        with pytest.raises(openai.BadRequestError) as rejected:
            await bad.chat.completions.create(model="grok-3", messages=USER)
        assert "Incorrect API key provided" in rejected.value.response.text


@pytest.mark.asyncio
async def test_tokenize_api_key_and_unknown_routes(sim: Simulator) -> None:
    secret = "xai-this-is-the-secret-key-0123456789"
    async with aiohttp.ClientSession(
        base_url=sim.url, headers={"Authorization": f"Bearer {secret}"}
    ) as http:
        body = {"text": "hello big world", "model": "grok-3"}
        async with http.post("/v1/tokenize-text", json=body) as resp:
            tokens = (await resp.json())["token_ids"]
        assert [t["string_token"] for t in tokens] == ["hello", " big", " world"]
        assert tokens[1]["token_bytes"] == list(b" big")

        async with http.get("/v1/api-key") as resp:
            raw = await resp.read()
        info = orjson.loads(raw)
        assert info["name"] == "sim-key" and info["team_id"] and info["api_key_id"]
        assert secret.encode() not in raw and secret[8:-4].encode() not in raw

        async with http.get("/v1/no-such-thing") as resp:
            assert resp.status == 404 and resp.headers["x-request-id"]
            assert set(await resp.json()) == {"code", "error"}
        async with http.get("/v1/chat/completions") as resp:
            assert resp.status == 405 and set(await resp.json()) == {"code", "error"}
        async with http.post("/v1/chat/completions", data=b"{}") as resp:
            assert resp.status == 415
        async with http.post("/v1/chat/completions", json={"messages": USER}) as resp:
            assert resp.status == 422
