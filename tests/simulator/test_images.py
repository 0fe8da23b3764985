"""Image generation and edits, driven by the openai SDK, billed per image."""

from __future__ import annotations

import base64

import openai
import pytest

from daemon.simulator import Simulator
from daemon.simulator.images import PIXEL_PNG


@pytest.mark.asyncio
async def test_images_generate_and_edit(oai: openai.AsyncOpenAI, sim: Simulator) -> None:
    urls = await oai.images.generate(prompt="a meter", model="grok-imagine-image", n=3)
    assert urls.data is not None and len(urls.data) == 3
    assert all((d.url or "").startswith("https://") for d in urls.data)
    assert urls.model_dump()["usage"]["cost_in_usd_ticks"] == 3 * 200000000

    b64 = await oai.images.generate(
        prompt="a meter", model="grok-2-image", response_format="b64_json"
    )
    assert b64.data is not None
    assert base64.b64decode(b64.data[0].b64_json or "").startswith(b"\x89PNG")
    assert b64.model_dump()["usage"]["cost_in_usd_ticks"] == 700000000

    edited = await oai.images.edit(
        image=("in.png", base64.b64decode(PIXEL_PNG), "image/png"),
        prompt="make it blue",
        model="grok-imagine-image",
        n=2,
    )
    assert edited.data is not None and len(edited.data) == 2
    assert edited.model_dump()["usage"]["cost_in_usd_ticks"] == 2 * 200000000

    with pytest.raises(openai.UnprocessableEntityError):
        await oai.images.generate(prompt="too many", model="grok-imagine-image", n=11)
