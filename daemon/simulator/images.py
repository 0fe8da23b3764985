"""``POST /v1/images/generations``, ``POST /v1/images/edits`` and ``GET /v1/images/{request_id}``.

Follows xai-api.md "Images": ``n`` images (1 to 10) as URLs or ``b64_json``, each with its
``mime_type``, billed per image in ``usage.cost_in_usd_ticks``: the listed ``image_price``, or
for a model with ``pricing[]`` tiers (grok-imagine-image-2.0) the tier of the request's
``quality`` x ``resolution`` (`catalog.image_price_ticks`; an unlisted pair is 422). The answer
has no id and no model (the id is the ``x-request-id`` header). With
``state.legacy_2025_shapes``: each item has ``revised_prompt`` instead, and there is no usage.
Edits accept JSON or the multipart body the openai SDK sends.

Deferred (xai-api.md "Images"): ``"deferred": true`` answers ``{"request_id"}`` and keeps the
job (`ImageJob`); ``GET /v1/images/{request_id}`` answers 202 while it runs (or 200
``{"status": "pending"}`` with ``state.image_pending_200``), then 200 ``{"status": "done",
"data", "usage"}`` on every later poll [guess: the POST's answer plus its status]. A job the POST
asked to fail (``X-Sim-Image-Outcome: failed|expired``) ends 200 ``{"status": "failed",
"error"}`` or ``{"status": "expired"}``. ``X-Sim-Image-Polls: N`` on the POST sets its pending
polls (default ``state.image_polls``); an unknown id is 404.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import hdrs, web

from daemon.simulator.billing import IMAGE_GENERATION
from daemon.simulator.catalog import cost_fields, find_model, image_price_ticks
from daemon.simulator.faults import Injection, header_choice, header_int
from daemon.simulator.state import SimulatorState
from daemon.simulator.wire import ApiError, Reply, json_body, json_reply

HEADER_IMAGE_POLLS: Final = "X-Sim-Image-Polls"
HEADER_IMAGE_OUTCOME: Final = "X-Sim-Image-Outcome"


@dataclass(slots=True)
class ImageJob:
    """A deferred image job: the 200 answer it ends with (done, failed or expired) and how many
    polls get a pending answer first."""

    body: dict[str, Any]
    polls_left: int


PIXEL_PNG = (  # a 1x1 PNG: what b64_json images carry
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ"
    "AAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _multipart_fields(raw: bytes, content_type: str) -> dict[str, Any]:
    """The fields of a multipart body (what the openai SDK sends to images.edit); files elided."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise ApiError(400, "A multipart body needs a boundary")
    fields: dict[str, Any] = {}
    for part in raw.split(b"--" + match.group(1).encode()):
        head, separator, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if not separator or name is None:
            continue
        key = name.group(1).decode()
        if b"filename=" in head:
            fields[key] = "<file>"
        else:
            fields[key] = value.removesuffix(b"\r\n").decode("utf-8", "replace")
    return fields


async def _images(request: web.Request, state: SimulatorState, inj: Injection, edit: bool) -> Reply:
    raw = await request.read()
    content_type = request.headers.get(hdrs.CONTENT_TYPE, "")
    if edit and content_type.lower().startswith("multipart/form-data"):
        req = _multipart_fields(raw, content_type)
    else:
        req = json_body(raw, request.headers)
    body, _, _ = image_answer(state, req, inj, edit)
    if req.get("deferred") is True:
        return _defer(request, state, body)
    return json_reply(body)


def image_answer(
    state: SimulatorState, req: dict[str, Any], inj: Injection, edit: bool
) -> tuple[dict[str, Any], str, int]:
    """The answer to an image request (REST's JSON fields), the id of the model that drew it,
    and the listing cost in ticks (before `SimulatorState.billing_ratio`).

    ``ApiError`` 422 for a bad prompt, ``n``, format or an unpriced quality x resolution, 404
    for an unknown model.
    """
    prompt = req.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(422, "`prompt` must be a non-empty string")
    name = req.get("model") or (state.image_models[0]["id"] if state.image_models else "")
    entry = find_model(state.image_models, str(name))
    if entry is None:
        raise ApiError(
            404, f"The model {name} does not exist or your team does not have access to it."
        )
    raw_n = req.get("n", 1)
    try:
        n = int(raw_n if raw_n is not None else 1)
    except (TypeError, ValueError):
        n = 0
    if isinstance(raw_n, bool) or not 1 <= n <= 10:
        raise ApiError(422, f"`n` must be from 1 to 10, got {raw_n!r}")
    response_format = req.get("response_format") or "url"
    if response_format not in ("url", "b64_json"):
        raise ApiError(422, f"`response_format` must be url or b64_json, got {response_format!r}")
    price = image_price_ticks(entry, req.get("quality"), req.get("resolution"))
    if price is None:
        raise ApiError(
            422, f"No price for quality {req.get('quality')!r} at {req.get('resolution')!r}"
        )
    legacy = state.legacy_2025_shapes
    data = []
    for index in range(n):
        digest = hashlib.sha256(f"{prompt}\x00{index}\x00{edit}".encode()).hexdigest()
        if response_format == "url":
            item = {"url": f"https://imgen.x.ai/xai-imgen/xai-tmp-imgen-{digest[:32]}.jpeg"}
            mime = "image/jpeg"
        else:
            item = {"b64_json": PIXEL_PNG}
            mime = "image/png"
        if legacy:
            item["revised_prompt"] = prompt
        else:
            item["mime_type"] = mime
        data.append(item)
    body: dict[str, Any] = {"data": data}
    cost = cost_fields(state, {IMAGE_GENERATION: price * n})
    if inj.usage != "none" and cost:
        body["usage"] = cost
    return body, str(entry["id"]), price * n


def _defer(request: web.Request, state: SimulatorState, body: dict[str, Any]) -> Reply:
    """Keep a deferred job ending in ``body`` (or the outcome its headers ask); its id."""
    outcome = header_choice(request.headers, HEADER_IMAGE_OUTCOME, ("done", "failed", "expired"))
    polls = header_int(request.headers, HEADER_IMAGE_POLLS)
    if outcome == "failed":
        end: dict[str, Any] = {
            "status": "failed",
            "error": "Generated image rejected by moderation",
        }
    elif outcome == "expired":
        end = {"status": "expired"}
    else:
        end = {"status": "done", **body}
    request_id = str(uuid.uuid4())
    state.image_jobs[request_id] = ImageJob(end, state.image_polls if polls is None else polls)
    return json_reply({"request_id": request_id})


async def get_image_job(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/images/{request_id}`: pending until the job's polls run out, then its end."""
    job = state.image_jobs.get(request.match_info["request_id"])
    if job is None:
        raise ApiError(404, f"No image request {request.match_info['request_id']}")
    if job.polls_left > 0:
        job.polls_left -= 1
        if state.image_pending_200:
            return json_reply({"status": "pending"})
        return Reply(status=202, content_type="")
    return json_reply(job.body)


async def generate_images(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/images/generations`."""
    return await _images(request, state, inj, edit=False)


async def edit_images(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/images/edits` (JSON or multipart)."""
    return await _images(request, state, inj, edit=True)
