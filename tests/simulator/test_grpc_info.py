"""The gRPC face's Models, Auth and Tokenize services through the real xai-sdk: REST's listings
under gRPC's names, the key described, text tokenized."""

from __future__ import annotations

import grpc
import pytest
from xai_sdk import AsyncClient
from xai_sdk.proto import models_pb2

from daemon.simulator import GrpcSimulator


async def test_language_models_under_grpcs_names(
    axai: AsyncClient, grpc_sim: GrpcSimulator
) -> None:
    listed = await axai.models.list_language_models()
    assert [m.name for m in listed] == [m["id"] for m in grpc_sim.state.listing]
    grok = await axai.models.get_language_model("grok-4.3-latest")  # by alias
    assert grok.name == "grok-4.3" and list(grok.aliases) == ["grok-4.3-latest"]
    prices = (
        grok.prompt_text_token_price,
        grok.cached_prompt_token_price,
        grok.completion_text_token_price,
        grok.prompt_image_token_price,
    )
    assert prices == (12500, 2000, 25000, 12500)
    assert grok.max_prompt_length == 2_000_000 and grok.created.seconds == 1775001600
    assert list(grok.input_modalities) == [models_pb2.TEXT, models_pb2.IMAGE]
    grpc_sim.state.fingerprints["grok-4.3"] = "fp_new"  # the fingerprint in force is listed
    assert (await axai.models.get_language_model("grok-4.3")).system_fingerprint == "fp_new"


async def test_image_and_embedding_models(axai: AsyncClient) -> None:
    images = await axai.models.list_image_generation_models()
    prices = {m.name: m.image_price for m in images}
    # grok-imagine-image-2.0 has tiers only: its default (medium, 1k) tier is listed
    assert prices == {
        "grok-imagine-image": 200_000_000,
        "grok-imagine-image-2.0": 400_000_000,
        "grok-2-image-1212": 700_000_000,
    }
    assert list(await axai.models.list_embedding_models()) == []
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await axai.models.get_embedding_model("anything")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_failing_listing_fails_with_its_code(
    axai: AsyncClient, grpc_sim: GrpcSimulator
) -> None:
    grpc_sim.state.listing_status = 403
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await axai.models.list_language_models()
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert denied.value.details() == "Simulated listing failure"


async def test_api_key_info_and_tokenize(axai: AsyncClient, grpc_sim: GrpcSimulator) -> None:
    key = await axai.auth.get_api_key_info()
    assert key.redacted_api_key == "****" and key.team_id == grpc_sim.state.team_id
    assert key.create_time.seconds == 1735689600 and not key.disabled
    tokens = await axai.tokenize.tokenize_text("hello world", "grok-4.3")
    assert [(t.string_token, t.token_bytes, t.token_id) for t in tokens] == [
        ("hello", b"hello", 19898),
        (" world", b" world", 70621),
    ]
