"""The model listings: ``/v1/language-models``, ``/v1/image-generation-models``, ``/v1/models``.

Follows xai-api.md "Listings": the xAI listings carry prices, aliases and the fingerprint now in
force; the OpenAI-style ``/v1/models`` carries ids only. Each has a ``/{model_id}`` form that
accepts aliases. ``state.listing_status`` makes all of them fail at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from daemon.simulator.catalog import find_model
from daemon.simulator.faults import Injection
from daemon.simulator.state import SimulatorState
from daemon.simulator.wire import ApiError, Reply, json_reply


def _listed(state: SimulatorState, model: Mapping[str, Any]) -> dict[str, Any]:
    """A listing entry with the fingerprint currently in force (tests change fingerprints)."""
    out = dict(model)
    fingerprint = state.fingerprints.get(str(model.get("id")))
    if fingerprint is not None:
        out["fingerprint"] = fingerprint
    return out


def _check_listing(state: SimulatorState) -> None:
    if state.listing_status != 200:
        raise ApiError(state.listing_status, "Simulated listing failure")


async def list_language_models(
    request: web.Request, state: SimulatorState, inj: Injection
) -> Reply:
    """`GET /v1/language-models`: every language model, with prices."""
    _check_listing(state)
    return json_reply({"models": [_listed(state, m) for m in state.listing]})


async def get_language_model(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/language-models/{model_id}` (an id or an alias)."""
    _check_listing(state)
    found = find_model(state.listing, request.match_info["model_id"])
    if found is None:
        raise ApiError(404, f"The model {request.match_info['model_id']} does not exist.")
    return json_reply(_listed(state, found))


async def list_image_models(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/image-generation-models`: every image model, with image_price."""
    _check_listing(state)
    return json_reply({"models": [_listed(state, m) for m in state.image_models]})


async def get_image_model(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/image-generation-models/{model_id}` (an id or an alias)."""
    _check_listing(state)
    found = find_model(state.image_models, request.match_info["model_id"])
    if found is None:
        raise ApiError(404, f"The model {request.match_info['model_id']} does not exist.")
    return json_reply(_listed(state, found))


def _openai_model(model: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": model.get("id"),
        "created": model.get("created"),
        "object": "model",
        "owned_by": model.get("owned_by", "xai"),
    }


async def list_models(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/models`: every model, OpenAI-style (ids, no prices)."""
    _check_listing(state)
    data = [_openai_model(m) for m in [*state.listing, *state.image_models]]
    return json_reply({"object": "list", "data": data})


async def get_model(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/models/{model_id}`, OpenAI-style."""
    _check_listing(state)
    name = request.match_info["model_id"]
    found = find_model(state.listing, name) or find_model(state.image_models, name)
    if found is None:
        raise ApiError(404, f"The model {name} does not exist.")
    return json_reply(_openai_model(found))
