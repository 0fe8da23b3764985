"""A faithful fake of api.x.ai: a real aiohttp server for `xai-meter demo`, `simulate`, tests.

Why a real server: the relay and the official SDKs are tested against the bytes a real upstream
sends (chunked SSE, gzip, cut connections), not against mocks. Everything follows
``xai-api.md``: resolved model ids, reasoning tokens outside ``completion_tokens`` in chat and
inside ``output_tokens`` in Responses, cached tokens a subset of the prompt, and
``cost_in_usd_ticks`` computed from the listing with the documented formula.

Content is deterministic (the same prompt gives the same reply and token counts); only ids and
timestamps vary. Everything is steered from two places:

* `SimulatorState`, mutable at runtime (prices, fingerprints, billing ratio, stalls, ...);
* request headers (``X-Sim-Status``, ``X-Sim-Stall``, ...), so a test says in the request itself
  what should go wrong; `daemon.simulator.faults` lists them all.

Every response carries ``x-request-id``. Errors are ``{"code": ..., "error": ...}``. Answers
take the 2026 shapes; `SimulatorState.legacy_2025_shapes` gives the 2025 ones (its docstring
says exactly which), for every model, current or retired.

The package, one module per concern, the API surfaces each in their own:

* `catalog`   the default listings, name resolution and the bill (independent of `daemon.pricing`)
* `state`     `SimulatorState`, the recorded `SimulatedRequest`s
* `wire`      replies, SSE frames, xAI-shaped errors, JSON request bodies
* `faults`    the X-Sim-* headers and `send`, the one place that writes a reply
* `auth`      the API key check, ``GET /v1/api-key``
* `prompts`   token counts, the prompt cache, deterministic replies, ``/v1/tokenize-text``
* `chat`, `responses`, `messages`, `images`, `listing`: one surface each
* `voice`     text-to-speech (audio bytes) and speech-to-text (JSON) over REST
* `sockets`   the WebSockets' plumbing (faults, logs, turns) and the Responses socket
* `realtime`  the voice sockets: realtime, streaming TTS and STT
* `server`    the aiohttp app and its routes, `start`, `run`

The gRPC face (xai-api.md "gRPC API", what ``xai-sdk`` speaks) serves the same fake from the same
`SimulatorState`, its faults read from ``x-sim-*`` metadata:

* `grpc_server`  the grpc.aio server, the front every call passes, `start_grpc`
* `grpc_wire`    the call, the method table entry, usage and timestamps as protos
* `grpc_chat`, `grpc_media`, `grpc_info`: Chat and Sample; Image and Video; Models, Auth,
  Tokenize
"""

from __future__ import annotations

from daemon.simulator.auth import INVALID_KEY
from daemon.simulator.catalog import (
    default_fingerprints,
    default_image_models,
    default_listing,
    price_ticks,
    resolve_model,
    tool_fee_ticks,
)
from daemon.simulator.faults import (
    HEADER_CACHED_TOKENS,
    HEADER_CUT_AFTER,
    HEADER_GZIP,
    HEADER_MALFORMED,
    HEADER_OVERLOADED,
    HEADER_PROMPT_TOKENS,
    HEADER_RESPONSE_STATUS,
    HEADER_SOURCES,
    HEADER_SPLIT,
    HEADER_STALL,
    HEADER_STATUS,
    HEADER_USAGE,
    Injection,
)
from daemon.simulator.grpc_server import GrpcSimulator, start_grpc
from daemon.simulator.server import Simulator, build_app, run, start
from daemon.simulator.state import STATE_KEY, SimulatedRequest, SimulatorState

__all__ = [
    "HEADER_CACHED_TOKENS",
    "HEADER_CUT_AFTER",
    "HEADER_GZIP",
    "HEADER_MALFORMED",
    "HEADER_OVERLOADED",
    "HEADER_PROMPT_TOKENS",
    "HEADER_RESPONSE_STATUS",
    "HEADER_SOURCES",
    "HEADER_SPLIT",
    "HEADER_STALL",
    "HEADER_STATUS",
    "HEADER_USAGE",
    "INVALID_KEY",
    "STATE_KEY",
    "GrpcSimulator",
    "Injection",
    "SimulatedRequest",
    "Simulator",
    "SimulatorState",
    "build_app",
    "default_fingerprints",
    "default_image_models",
    "default_listing",
    "price_ticks",
    "resolve_model",
    "run",
    "start",
    "start_grpc",
    "tool_fee_ticks",
]
