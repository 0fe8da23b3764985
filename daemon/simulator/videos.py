"""``POST /v1/videos/generations | edits | extensions``, ``GET /v1/videos/{request_id}`` and
``GET /v1/video-generation-models``.

Follows xai-api.md "Video": a POST answers ``{"request_id"}``; the GET answers 202 while the job
runs (``{"status": "pending", "progress": N}``), then 200 ``{"status": "done", "video": {url,
duration, respect_moderation}, "model", "progress": 100, "usage": {"cost_in_usd_ticks"}}`` on
every later poll; a failed job answers 200 ``{"status": "failed", "error": {code, message}}``,
an expired one 200 ``{"status": "expired"}``; an unknown id 404. The listing carries no prices.

The bill is the simulator's own (independent of `daemon.pricing`): the generated seconds at the
per-second price of the model and resolution (``resolution``, else ``size``: `SIZES`), as
`VIDEO_PRICES` lists them (xai-api.md "Models (late 2026)": grok-imagine-video $0.05/s at 480p,
$0.07/s at 720p; grok-imagine-video-1.5 $0.08 / $0.14 / $0.25 at 480p / 720p / 1080p), plus
`IMAGE_INPUT_TICKS` per input image (`count_image_inputs`) and `VIDEO_INPUT_TICKS_PER_SECOND`
per second of an input ``video``. Our rules where xai-api.md is silent [guess]: an edit
re-renders its input, so its output is as long as the input; an extension generates
``duration`` new seconds; an input video the simulator made itself is as long as it made it,
any other one `INPUT_VIDEO_SECONDS`.

Steered per job by headers on the POST: ``X-Sim-Video-Polls: N`` (202 answers before the job
ends; default ``state.video_polls``) and ``X-Sim-Video-Outcome: done|failed|expired``; and by
``state.video_pending_200`` (pending polls answer 200 ``{"status": "pending"}`` instead of 202,
as xAI's deferred images do). ``X-Sim-Usage: none`` on the POST leaves ``usage`` out.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from daemon.simulator.billing import VIDEO_GENERATION
from daemon.simulator.catalog import cost_fields
from daemon.simulator.faults import Injection, header_choice, header_int
from daemon.simulator.state import SimulatorState, VideoJob
from daemon.simulator.wire import ApiError, Reply, json_body, json_reply

HEADER_VIDEO_POLLS: Final = "X-Sim-Video-Polls"
HEADER_VIDEO_OUTCOME: Final = "X-Sim-Video-Outcome"

#: Ticks per generated second, by model and resolution (xai-api.md "Models (late 2026)").
VIDEO_PRICES: Final[Mapping[str, Mapping[str, int]]] = {
    "grok-imagine-video": {"480p": 500_000_000, "720p": 700_000_000},
    "grok-imagine-video-1.5": {"480p": 800_000_000, "720p": 1_400_000_000, "1080p": 2_500_000_000},
}
VIDEO_ALIASES: Final[Mapping[str, str]] = {
    "grok-imagine-video-latest": "grok-imagine-video",
    "grok-imagine-video-1.5-latest": "grok-imagine-video-1.5",
}
DEFAULT_VIDEO_MODEL: Final = "grok-imagine-video"
DEFAULT_RESOLUTION: Final = "480p"  # [guess]: the cheapest, as xAI's other defaults are
DEFAULT_DURATION: Final = 8  # seconds (xai-api.md "Video": 1-15, default 8)
IMAGE_INPUT_TICKS: Final = 20_000_000  # $0.002 per input image
VIDEO_INPUT_TICKS_PER_SECOND: Final = 100_000_000  # $0.01 per second of input video
INPUT_VIDEO_SECONDS: Final = 8  # an input video the simulator did not make [guess]
#: ``size`` values and the resolution each is (a ``resolution`` field wins over it).
SIZES: Final[Mapping[str, str]] = {"848x480": "480p", "1280x720": "720p", "1920x1080": "1080p"}


def video_model(name: Any) -> str:
    """The listed id for a requested video model (None: the default); 404 when unknown."""
    if name is None:
        return DEFAULT_VIDEO_MODEL
    model = VIDEO_ALIASES.get(str(name), str(name))
    if model not in VIDEO_PRICES:
        raise ApiError(
            404, f"The model {name} does not exist or your team does not have access to it."
        )
    return model


def count_image_inputs(req: Mapping[str, Any]) -> int:
    """Input images: ``image`` and ``last_frame`` (one each), each of ``reference_images``,
    each of ``keyframes`` (a list, or an object of frames)."""
    count = sum(1 for key in ("image", "last_frame") if req.get(key))
    for key in ("reference_images", "keyframes"):
        value = req.get(key)
        if isinstance(value, list | dict):
            count += len(value)
    return count


def _url_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("url") or "")
    return str(value or "")


def _input_seconds(state: SimulatorState, video: Any) -> int:
    url = _url_of(video)
    for job in state.videos.values():
        made = job.body.get("video")
        if isinstance(made, dict) and made.get("url") == url:
            return int(made["duration"])
    return INPUT_VIDEO_SECONDS


def video_done_body(state: SimulatorState, kind: str, req: Mapping[str, Any]) -> dict[str, Any]:
    """The ``done`` answer of one job (`ApiError` for a request xAI would refuse): what the
    poll returns and what a batch's ``video_generation`` result holds, usage included."""
    prompt = req.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(422, "`prompt` must be a non-empty string")
    model = video_model(req.get("model"))
    resolution = req.get("resolution") or SIZES.get(str(req.get("size"))) or DEFAULT_RESOLUTION
    per_second = VIDEO_PRICES[model].get(str(resolution))
    if per_second is None:
        raise ApiError(422, f"{model} does not offer resolution {resolution!r}")
    duration = req.get("duration", DEFAULT_DURATION)
    if isinstance(duration, bool) or not isinstance(duration, int) or not 1 <= duration <= 15:
        raise ApiError(422, f"`duration` must be a whole number from 1 to 15, got {duration!r}")
    input_seconds = 0
    if kind in ("edits", "extensions"):
        if not _url_of(req.get("video")):
            raise ApiError(422, f"videos/{kind} needs the `video` to work on")
        input_seconds = _input_seconds(state, req.get("video"))
        if kind == "edits":
            duration = input_seconds  # an edit re-renders its input [guess]
    ticks = (
        duration * per_second
        + count_image_inputs(req) * IMAGE_INPUT_TICKS
        + input_seconds * VIDEO_INPUT_TICKS_PER_SECOND
    )
    digest = hashlib.sha256(f"{kind}\x00{prompt}\x00{uuid.uuid4()}".encode()).hexdigest()
    body: dict[str, Any] = {
        "status": "done",
        "video": {
            "url": f"https://vidgen.x.ai/xai-vidgen/xai-tmp-vidgen-{digest[:32]}.mp4",
            "duration": duration,
            "respect_moderation": True,
        },
        "model": model,
        "progress": 100,
    }
    usage = cost_fields(state, {VIDEO_GENERATION: ticks})
    if usage:
        body["usage"] = usage
    return body


async def _create(request: web.Request, state: SimulatorState, inj: Injection, kind: str) -> Reply:
    req = json_body(await request.read(), request.headers)
    body = video_done_body(state, kind, req)
    outcome = header_choice(request.headers, HEADER_VIDEO_OUTCOME, ("done", "failed", "expired"))
    if outcome == "failed":
        body = {
            "status": "failed",
            "error": {"code": "moderation_blocked", "message": "The video was not generated."},
        }
    elif outcome == "expired":
        body = {"status": "expired"}
    elif inj.usage == "none":
        body.pop("usage", None)
    polls = header_int(request.headers, HEADER_VIDEO_POLLS)
    request_id = str(uuid.uuid4())
    state.videos[request_id] = VideoJob(body, state.video_polls if polls is None else polls)
    return json_reply({"request_id": request_id})


async def generate_video(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/videos/generations`."""
    return await _create(request, state, inj, "generations")


async def edit_video(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/videos/edits`."""
    return await _create(request, state, inj, "edits")


async def extend_video(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/videos/extensions`."""
    return await _create(request, state, inj, "extensions")


async def get_video(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/videos/{request_id}`: 202 (or 200 pending) until the job ends, then its end,
    on every poll."""
    request_id = request.match_info["request_id"]
    job = state.videos.get(request_id)
    if job is None:
        raise ApiError(404, f"No video request {request_id}")
    if job.polls_left > 0:
        job.polls_left -= 1
        job.polls += 1
        pending = {"status": "pending", "progress": min(95, 20 * job.polls)}
        return json_reply(pending, status=200 if state.video_pending_200 else 202)
    return json_reply(job.body)


async def list_video_models(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/video-generation-models`: ids and aliases, no prices (xai-api.md "Listings")."""
    models = [
        {
            "id": model,
            "object": "model",
            "owned_by": "xai",
            "input_modalities": ["text", "image", "video"],
            "output_modalities": ["video"],
            "resolutions": sorted(prices, key=lambda r: int(r.rstrip("p"))),
            "aliases": [alias for alias, target in VIDEO_ALIASES.items() if target == model],
        }
        for model, prices in VIDEO_PRICES.items()
    ]
    return json_reply({"models": models})
