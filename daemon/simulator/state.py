"""What the simulator remembers and what tests steer: `SimulatorState` and the recorded requests.

One `SimulatorState` per running simulator, under `STATE_KEY` in its aiohttp app; every surface
reads its knobs (prices, fingerprints, billing ratio, stalls, ...) on each request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from daemon.simulator.catalog import default_fingerprints, default_image_models, default_listing

if TYPE_CHECKING:
    from daemon.simulator.images import ImageJob


@dataclass(slots=True)
class SimulatedRequest:
    """One request as the simulator received it, for tests to inspect."""

    method: str
    path: str
    query_string: str
    headers: CIMultiDict[str]
    body: bytes

    @property
    def query(self) -> str:
        return self.query_string

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(slots=True)
class Deferred:
    """A deferred chat completion: the answer, and how many polls get 202 first."""

    completion: dict[str, Any]
    polls_left: int
    grpc: Any = None  # for a job started over gRPC: what turns the completion into its message
    outcome: str = "done"  # a gRPC job: done | failed | expired (x-sim-deferred-outcome)


@dataclass(slots=True)
class GrpcVideoJob:
    """A deferred video started over gRPC (``Video/GenerateVideo`` or ``ExtendVideo``): its
    answer fields and how many polls get PENDING first (REST keeps its jobs as `VideoJob`)."""

    model: str
    duration: int  # seconds
    resolution: str  # 480p | 720p | 1080p
    ticks: int  # the listing cost, before `billing_ratio`
    polls_left: int
    polls: int = 0  # polls answered so far (progress grows with them)
    outcome: str = "done"  # done | failed | expired (x-sim-video-outcome on its start)
    booked: bool = False  # its DONE answer was billed (`daemon.simulator.billing`)


@dataclass(slots=True)
class VideoJob:
    """A video job (`daemon.simulator.videos`): the 200 answer it ends with (done, failed or
    expired), how many polls get a pending answer first, and how many got one so far."""

    body: dict[str, Any]
    polls_left: int
    polls: int = 0


@dataclass(slots=True)
class Batch:
    """A batch (`daemon.simulator.batches`): its requests as added, in order, and each one's
    result by ``batch_request_id`` (``{"response": {...}}`` or ``{"error": {...}}``)."""

    batch_id: str
    name: str
    create_time: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancelled: bool = False
    # the gRPC BatchRequest messages of the requests added over gRPC, by id
    # (daemon.simulator.grpc_batches answers GetBatchRequestResult's ``request`` with them)
    messages: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ManagedKey:
    """An API key as the Management API lists it (`daemon.simulator.management`): added when a
    key first calls the inference API (its ``api_key_id`` as ``GET /v1/api-key`` reports it),
    or by a test; tests steer its limits, ``disabled`` and ``expire_time`` (RFC 3339)."""

    api_key_id: str
    name: str = "sim-key"
    redacted: str = "****"
    disabled: bool = False
    qps: int | None = None  # requests per second; None: no limit
    qpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (the API sends it as a string)
    expire_time: str | None = None  # RFC 3339, e.g. "2026-05-01T00:00:00Z"; None: never
    create_time: str = "2025-01-01T00:00:00Z"
    acls: tuple[str, ...] = ("api-key:model:*", "api-key:endpoint:*")


@dataclass
class SimulatorState:
    """Every knob of the simulator; tests change these while it runs.

    Events are created unbound and bind to the loop that first waits on them, so a state belongs
    to one event loop.

    By default the simulator answers in the 2026 shapes of xai-api.md, for every model (the
    retired 2025 models stay listed and served beside the current ones). `legacy_2025_shapes`
    switches these, and only these, to their 2025 form:

    * Responses: ``system_fingerprint`` at the top level of the body and of the ``response``
      snapshots in stream events, instead of ``metadata.system_fingerprint`` (body, snapshots
      and every stream event); no ``usage.context_details``; no
      ``server_side_tool_usage_details`` (only ``num_server_side_tools_used`` and the ``*_call``
      items);
    * chat and Responses: ``service_tier`` only when priority/fast was granted (not
      ``"default"`` on every answer);
    * usage without ``cost_in_usd_ticks``/``cost_in_nano_usd`` (chat, Responses, images);
    * images: each item has ``revised_prompt`` (no ``mime_type``), no ``usage``;
    * messages: ids ``msg_<hex>`` instead of bare UUIDs.
    """

    chunk_delay: float = 0.0  # seconds between the writes of a stream
    fingerprints: dict[str, str] = field(default_factory=default_fingerprints)
    billing_ratio: tuple[int, int] = (1, 1)  # cost_in_usd_ticks = listing cost * num // den
    report_cost: bool = True  # include usage.cost_in_usd_ticks
    listing: list[dict[str, Any]] = field(default_factory=default_listing)
    image_models: list[dict[str, Any]] = field(default_factory=default_image_models)
    listing_status: int = 200  # != 200: the listing endpoints fail with this status
    deferred_polls: int = 1  # 202 answers before a deferred completion is ready
    messages_gone: bool = False  # /v1/messages answers 410, as xAI may
    # True: 2025-style xAI counting cache reads inside input_tokens; False (2026, xai-api.md):
    # reads and writes outside input_tokens, as on Anthropic
    messages_input_includes_cache: bool = False
    accept_unknown_models: bool = False  # False: unknown models get 404 as on xAI
    responses_done_marker: bool = False  # end Responses streams with `data: [DONE]` too
    legacy_2025_shapes: bool = False  # answer in 2025's shapes (see `SimulatorState`'s doc)
    cost_unit: str = "ticks"  # "nano_usd": usage carries cost_in_nano_usd instead of ticks
    redirects: dict[str, str] = field(default_factory=dict)  # retired name -> answering model
    ratelimit_requests: int = 1200  # x-ratelimit-limit-requests
    ratelimit_tokens: int = 4_000_000  # x-ratelimit-limit-tokens
    requests_served: int = 0  # successful answers so far (x-ratelimit-remaining-requests)
    tokens_served: int = 0  # tokens of those answers (x-ratelimit-remaining-tokens)
    team_id: str = "5a7f3c2e-1b9d-4e6a-8c0f-2d4b6e8a1c3f"
    record_requests: bool = True  # False: keep `requests` and `sent` empty (long benchmarks)
    requests: list[SimulatedRequest] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)  # each response body, before gzip (see send)
    sockets: list[SocketLog] = field(default_factory=list)  # each WebSocket served, in order
    socket_message: asyncio.Event = field(default_factory=asyncio.Event)  # one was received
    request_received: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    stalled: asyncio.Event = field(default_factory=asyncio.Event)  # a response began to stall
    abandoned: asyncio.Event = field(default_factory=asyncio.Event)  # a stall ended: client left
    abandoned_count: int = 0
    deferred: dict[str, Deferred] = field(default_factory=dict)
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)  # stored, by id
    # gRPC chat completions made with store_messages, by id: (converter, chat.completion body)
    stored_completions: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    grpc_videos: dict[str, GrpcVideoJob] = field(default_factory=dict)  # gRPC jobs, by request id
    prompt_cache: set[bytes] = field(default_factory=set)  # digests of prompt prefixes seen
    _contexts: dict[str, int] = field(default_factory=dict, repr=False)  # response id -> tokens
    # Video jobs and batches (daemon.simulator.videos, daemon.simulator.batches):
    video_polls: int = 1  # pending answers before a video job ends (X-Sim-Video-Polls: per job)
    video_pending_200: bool = False  # True: a pending poll is 200 {"status": "pending"}, not 202
    videos: dict[str, VideoJob] = field(default_factory=dict)  # by request id
    batch_ratio: tuple[int, int] = (1, 2)  # a batch result bills its usual cost * num // den
    batches: dict[str, Batch] = field(default_factory=dict)  # by batch id
    # Deferred image jobs (daemon.simulator.images):
    image_polls: int = 1  # pending answers before an image job ends (X-Sim-Image-Polls: per job)
    image_pending_200: bool = False  # True: a pending poll is 200 {"status": "pending"}, not 202
    image_jobs: dict[str, ImageJob] = field(default_factory=dict)  # by request id
    # A new realtime session's audio.input.format (None: 16-bit PCM at 24 kHz, xAI's default)
    realtime_input_format: dict[str, Any] | None = None
    # The Management and Billing API (daemon.simulator.management):
    management_key: str = "xai-mgmt-simulator"  # the one management key it accepts
    managed_keys: dict[str, ManagedKey] = field(default_factory=dict)  # by api_key_id
    # what every billed answer charged: (UTC day, api_key_id, unit_type) -> ticks
    billing_book: dict[tuple[str, str, str], int] = field(default_factory=dict)
    billing_drift: dict[str, float] = field(default_factory=dict)  # api_key_id -> /usage factor
    billing_clock: Callable[[], float] = time.time  # the day a charge is booked under
    prepaid_credits_cents: int = 10_000  # prepaid credits bought ($100)
    # monthly postpaid spending limits, cents (None: unset): hard, effective_hard, soft, effective
    spending_limits_cents: dict[str, int | None] = field(
        default_factory=lambda: {
            "hard": 100_000,
            "effective_hard": 100_000,
            "soft": None,
            "effective": 50_000,
        }
    )
    management_faults: list[int] = field(default_factory=list)  # next management answers' statuses
    management_status: int | None = None  # every management answer has this status
    management_page_size: int = 100  # api keys per page at most

    async def wait_for_requests(self, count: int, within: float = 5.0) -> list[SimulatedRequest]:
        """Wait until at least `count` requests arrived (bounded), instead of sleeping.

        It clears `request_received` while it waits.
        """
        async with asyncio.timeout(within):
            while len(self.requests) < count:
                self.request_received.clear()
                await self.request_received.wait()
        return self.requests

    def requests_to(self, path: str) -> list[SimulatedRequest]:
        return [r for r in self.requests if r.path == path]

    async def wait_for_socket_messages(self, count: int, within: float = 5.0) -> None:
        """Wait until the sockets served received at least `count` messages in all (bounded)."""
        async with asyncio.timeout(within):
            while sum(len(s.received) for s in self.sockets) < count:
                self.socket_message.clear()
                await self.socket_message.wait()


STATE_KEY = web.AppKey("xai_sim_state", SimulatorState)
CLOSING_KEY = web.AppKey("xai_sim_closing", asyncio.Event)


@dataclass(slots=True)
class SocketLog:
    """One WebSocket the simulator served (`daemon.simulator.sockets`), for tests to inspect:
    its path and query, the subprotocol it selected, every message it received and sent, as
    they were (text as str, binary as bytes), and the close code and reason the client sent
    (None: the connection ended without a close frame from the client); `ended` is set when it
    is over."""

    path: str
    query_string: str
    protocol: str | None
    received: list[str | bytes] = field(default_factory=list)
    sent: list[str | bytes] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    ended: asyncio.Event = field(default_factory=asyncio.Event)
