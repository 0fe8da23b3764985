"""gRPC ``xai_api.Models``, ``xai_api.Auth`` and ``xai_api.Tokenize``: never billed.

Follows xai-api.md "Listings" and "gRPC API": the gRPC listing has other names than REST's
(``name`` for ``id``, ``cached_prompt_token_price``, ``max_prompt_length`` for
``context_length``, ``system_fingerprint``) and no long-context fields; modalities are enums.
An image model priced by ``pricing[]`` tiers lists its default tier's price as ``image_price``
[guess: the proto has no tiers]. The entries, the fingerprints in force and
``state.listing_status`` are REST's (`listing`). ``Auth/get_api_key_info`` describes the key as
``GET /v1/api-key`` does; ``Tokenize/TokenizeText`` splits text as ``/v1/tokenize-text``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import empty_pb2
from google.protobuf.message import Message
from xai_sdk.proto import auth_pb2, models_pb2, tokenize_pb2

from daemon.simulator.auth import api_key_of, key_description
from daemon.simulator.catalog import (
    IMAGE_DEFAULT_QUALITY,
    IMAGE_DEFAULT_RESOLUTION,
    find_model,
    image_price_ticks,
)
from daemon.simulator.grpc_wire import Call, Method, iso_timestamp, timestamp
from daemon.simulator.prompts import model_of, text_tokens
from daemon.simulator.state import SimulatorState
from daemon.simulator.wire import ApiError

_MODALITIES = {
    "text": models_pb2.TEXT,
    "image": models_pb2.IMAGE,
    "embedding": models_pb2.EMBEDDING,
}


def _modalities(names: Any) -> list[int]:
    return [_MODALITIES[n] for n in names or () if n in _MODALITIES]


def _int(entry: Mapping[str, Any], key: str) -> int:
    value = entry.get(key)
    return value if isinstance(value, int) else 0


def _fingerprint(state: SimulatorState, entry: Mapping[str, Any]) -> str:
    return state.fingerprints.get(str(entry.get("id")), str(entry.get("fingerprint") or ""))


def language_model(state: SimulatorState, entry: Mapping[str, Any]) -> models_pb2.LanguageModel:
    """A REST ``/v1/language-models`` entry as gRPC's ``LanguageModel``."""
    return models_pb2.LanguageModel(
        name=str(entry["id"]),
        aliases=list(entry.get("aliases") or ()),
        version=str(entry.get("version") or ""),
        input_modalities=_modalities(entry.get("input_modalities")),
        output_modalities=_modalities(entry.get("output_modalities")),
        prompt_text_token_price=_int(entry, "prompt_text_token_price"),
        prompt_image_token_price=_int(entry, "prompt_image_token_price"),
        cached_prompt_token_price=_int(entry, "cached_prompt_text_token_price"),
        completion_text_token_price=_int(entry, "completion_text_token_price"),
        search_price=_int(entry, "search_price"),
        created=timestamp(_int(entry, "created")),
        max_prompt_length=_int(entry, "context_length"),
        system_fingerprint=_fingerprint(state, entry),
    )


def image_model(state: SimulatorState, entry: Mapping[str, Any]) -> models_pb2.ImageGenerationModel:
    """A REST ``/v1/image-generation-models`` entry as gRPC's ``ImageGenerationModel``."""
    price = image_price_ticks(entry, IMAGE_DEFAULT_QUALITY, IMAGE_DEFAULT_RESOLUTION)
    return models_pb2.ImageGenerationModel(
        name=str(entry["id"]),
        aliases=list(entry.get("aliases") or ()),
        version=str(entry.get("version") or ""),
        input_modalities=_modalities(entry.get("input_modalities")),
        output_modalities=_modalities(entry.get("output_modalities")),
        image_price=price or 0,
        created=timestamp(_int(entry, "created")),
        max_prompt_length=_int(entry, "max_prompt_length"),
        system_fingerprint=_fingerprint(state, entry),
    )


def _check_listing(state: SimulatorState) -> None:
    if state.listing_status != 200:
        raise ApiError(state.listing_status, "Simulated listing failure")


def _found(models: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = find_model(models, name)
    if found is None:
        raise ApiError(404, f"The model {name} does not exist.")
    return found


async def list_language_models(call: Call, req: empty_pb2.Empty) -> Message:
    """``Models/ListLanguageModels``: every language model, with prices."""
    _check_listing(call.state)
    models = [language_model(call.state, m) for m in call.state.listing]
    return models_pb2.ListLanguageModelsResponse(models=models)


async def get_language_model(call: Call, req: models_pb2.GetModelRequest) -> Message:
    """``Models/GetLanguageModel``: one, by name or alias."""
    _check_listing(call.state)
    return language_model(call.state, _found(call.state.listing, req.name))


async def list_image_models(call: Call, req: empty_pb2.Empty) -> Message:
    """``Models/ListImageGenerationModels``: every image model, with ``image_price``."""
    _check_listing(call.state)
    models = [image_model(call.state, m) for m in call.state.image_models]
    return models_pb2.ListImageGenerationModelsResponse(models=models)


async def get_image_model(call: Call, req: models_pb2.GetModelRequest) -> Message:
    """``Models/GetImageGenerationModel``: one, by name or alias."""
    _check_listing(call.state)
    return image_model(call.state, _found(call.state.image_models, req.name))


async def list_embedding_models(call: Call, req: empty_pb2.Empty) -> Message:
    """``Models/ListEmbeddingModels``: none (xai-api.md "Other endpoints": none offered)."""
    _check_listing(call.state)
    return models_pb2.ListEmbeddingModelsResponse()


async def get_embedding_model(call: Call, req: models_pb2.GetModelRequest) -> Message:
    """``Models/GetEmbeddingModel``: NOT_FOUND, there are none."""
    _check_listing(call.state)
    raise ApiError(404, f"The model {req.name} does not exist.")


async def api_key_info(call: Call, req: empty_pb2.Empty) -> Message:
    """``Auth/get_api_key_info``: the key, described as ``GET /v1/api-key`` does."""
    info = key_description(call.state, api_key_of(call.metadata) or "")
    return auth_pb2.ApiKey(
        redacted_api_key=info["redacted_api_key"],
        user_id=info["user_id"],
        name=info["name"],
        create_time=iso_timestamp(info["create_time"]),
        modify_time=iso_timestamp(info["modify_time"]),
        modified_by=info["modified_by"],
        team_id=info["team_id"],
        acls=info["acls"],
        api_key_id=info["api_key_id"],
        api_key_blocked=info["api_key_blocked"],
        team_blocked=info["team_blocked"],
        disabled=info["api_key_disabled"],
    )


async def tokenize_text(call: Call, req: tokenize_pb2.TokenizeTextRequest) -> Message:
    """``Tokenize/TokenizeText``: the tokens of ``text`` for a listed model."""
    resolved, _ = model_of(call.state, {"model": req.model}, None)
    tokens = [
        tokenize_pb2.Token(
            token_id=t["token_id"],
            string_token=t["string_token"],
            token_bytes=bytes(t["token_bytes"]),
        )
        for t in text_tokens(req.text)
    ]
    return tokenize_pb2.TokenizeTextResponse(tokens=tokens, model=resolved)


_MODELS = "/xai_api.Models/"
METHODS: dict[str, Method] = {
    _MODELS + "ListLanguageModels": Method(empty_pb2.Empty, unary=list_language_models),
    _MODELS + "GetLanguageModel": Method(models_pb2.GetModelRequest, unary=get_language_model),
    _MODELS + "ListImageGenerationModels": Method(empty_pb2.Empty, unary=list_image_models),
    _MODELS + "GetImageGenerationModel": Method(models_pb2.GetModelRequest, unary=get_image_model),
    _MODELS + "ListEmbeddingModels": Method(empty_pb2.Empty, unary=list_embedding_models),
    _MODELS + "GetEmbeddingModel": Method(models_pb2.GetModelRequest, unary=get_embedding_model),
    "/xai_api.Auth/get_api_key_info": Method(empty_pb2.Empty, unary=api_key_info),
    "/xai_api.Tokenize/TokenizeText": Method(tokenize_pb2.TokenizeTextRequest, unary=tokenize_text),
}
"""The methods this module serves, by full method name."""
