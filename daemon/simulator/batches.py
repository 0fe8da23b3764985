"""The Batch API: ``/v1/batches`` and its requests and paged results.

Follows xai-api.md "Batch API": ``POST /v1/batches {name, input_file_id?}``, ``GET /v1/batches``,
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}:cancel``, ``POST /v1/batches/{id}/requests
{batch_requests: [...]}``, ``GET /v1/batches/{id}/requests``, ``GET /v1/batches/{id}/results
?limit&pagination_token`` → ``{results: [{batch_request_id, batch_result: {response:
{chat_get_completion | image_generation | video_generation: <answer with usage>}} | {error}}],
pagination_token?}`` (no token on the last page), and one result by id at
``GET /v1/batches/{id}/results/{batch_request_id}`` → ``{request, result}`` (the proto's
GetBatchRequestResultResponse shape; xai-api.md names no REST shape for it).

A batch request is ``{batch_request_id?, batch_request: {<kind>: <the request body>}}`` with kind
``chat_get_completion`` (a chat request), ``responses`` (a Responses request: its result comes
back in chat-completion shape, xai-api.md), ``image_generation`` or ``video_generation``. The
simulator runs each at once, as the chat, images and video surfaces would, and bills it
``state.batch_ratio`` of its usual cost (xai-api.md "Pricing rules beyond the listing": batch
results are discounted, 50% documented in early 2026): ``cost_in_usd_ticks * num // den``.
A request it cannot run (unknown model, bad body, unknown kind) gets an error result
``{"error": {"code", "message"}}`` (a google.rpc.Status, as the proto's BatchResult.error).
Results pages hold ``limit`` results (default `DEFAULT_LIMIT`); the token is opaque (the next
offset, in hex).

The logic (`new_batch`, `find_batch`, `add_requests`, `results_page`, `one_result`,
`batch_object`) serves both faces from the one ``state.batches``: the REST handlers here, and
gRPC's ``xai_api.BatchMgmt`` (`daemon.simulator.grpc_batches`), which turns its messages into
these lines and these results into its messages. A batch made over one transport is read over
the other.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from daemon.simulator.billing import IMAGE_GENERATION, billing
from daemon.simulator.catalog import cost_fields, find_model, image_price_ticks
from daemon.simulator.chat import chat_completion, prepare_chat  # one chat answer, as served
from daemon.simulator.faults import Injection
from daemon.simulator.state import Batch, SimulatorState
from daemon.simulator.videos import video_done_body
from daemon.simulator.wire import ApiError, Reply, json_body, json_reply

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
# google.rpc.Status codes for the statuses a request can fail with (the proto's BatchResult.error)
_STATUS_CODES: Final = {400: 3, 404: 5, 409: 6, 422: 3}


def _batch(state: SimulatorState, request: web.Request) -> Batch:
    return find_batch(state, request.match_info["batch_id"])


def _discounted(state: SimulatorState, usage: Any) -> None:
    """Scale a usage object's cost field(s) by `state.batch_ratio`, in place."""
    if not isinstance(usage, dict):
        return
    num, den = state.batch_ratio
    for key in ("cost_in_usd_ticks", "cost_in_nano_usd"):
        if isinstance(usage.get(key), int):
            usage[key] = usage[key] * num // den


def _chat_messages(req: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses request as the chat request it is run as (``input`` → ``messages``)."""
    prompt = req.get("input")
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    chat = {k: v for k, v in req.items() if k not in ("input", "instructions")}
    if isinstance(req.get("instructions"), str):
        messages = [{"role": "system", "content": req["instructions"]}, *messages]
    return {**chat, "messages": messages}


def _image_answer(state: SimulatorState, req: Mapping[str, Any]) -> dict[str, Any]:
    prompt = req.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(422, "`prompt` must be a non-empty string")
    name = str(req.get("model") or state.image_models[0]["id"])
    entry = find_model(state.image_models, name)
    if entry is None:
        raise ApiError(404, f"The model {name} does not exist.")
    n = req.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10:
        raise ApiError(422, f"`n` must be from 1 to 10, got {n!r}")
    price = image_price_ticks(entry, req.get("quality"), req.get("resolution"))
    if price is None:
        raise ApiError(422, "No price for that quality and resolution")
    data = []
    for index in range(n):
        digest = hashlib.sha256(f"{prompt}\x00{index}\x00batch".encode()).hexdigest()
        url = f"https://imgen.x.ai/xai-imgen/xai-tmp-imgen-{digest[:32]}.jpeg"
        data.append({"url": url, "mime_type": "image/jpeg"})
    answer: dict[str, Any] = {"data": data, "model": entry["id"]}  # the proto names it
    usage = cost_fields(state, {IMAGE_GENERATION: price * n})
    if usage:
        answer["usage"] = usage
    return answer


def _run(state: SimulatorState, headers: Mapping[str, str], batch_request: Any) -> dict[str, Any]:
    """One batch request run: its ``batch_result``, billed on its own at the batch discount."""
    with billing(state, None, state.batch_ratio):
        return _run_line(state, headers, batch_request)


def _run_line(
    state: SimulatorState, headers: Mapping[str, str], batch_request: Any
) -> dict[str, Any]:
    if not isinstance(batch_request, dict) or len(batch_request) != 1:
        raise ApiError(422, "`batch_request` must hold exactly one request")
    [(kind, req)] = batch_request.items()
    if not isinstance(req, dict):
        raise ApiError(422, f"`{kind}` must be a JSON object")
    if kind in ("chat_get_completion", "responses"):
        chat_req = req if kind == "chat_get_completion" else _chat_messages(req)
        chat = prepare_chat(state, headers, chat_req)
        answer = chat_completion(state, chat, Injection(), str(uuid.uuid4()))
        key = "chat_get_completion"  # Responses lines come back in chat shape (xai-api.md)
    elif kind == "image_generation":
        answer, key = _image_answer(state, req), kind
    elif kind == "video_generation":
        answer, key = video_done_body(state, "generations", req), kind
    else:
        raise ApiError(422, f"Unknown batch request kind {kind!r}")
    _discounted(state, answer.get("usage"))
    return {"response": {key: answer}}


# --- the logic both faces serve (REST here, gRPC in `daemon.simulator.grpc_batches`) ---------


def new_batch(state: SimulatorState, name: Any) -> Batch:
    """A new, empty batch named ``name`` (422 unless a non-empty string), kept in the state."""
    if not isinstance(name, str) or not name:
        raise ApiError(422, "`name` must be a non-empty string")
    batch_id = f"batch_{uuid.uuid4()}"
    created = datetime.fromtimestamp(int(time.time()), UTC).isoformat().replace("+00:00", "Z")
    batch = state.batches[batch_id] = Batch(batch_id, name, created)
    return batch


def find_batch(state: SimulatorState, batch_id: str) -> Batch:
    """The batch of that id; 404 when there is none."""
    batch = state.batches.get(batch_id)
    if batch is None:
        raise ApiError(404, f"No batch {batch_id}")
    return batch


def add_requests(
    state: SimulatorState, batch: Batch, headers: Mapping[str, str], lines: Any
) -> list[str]:
    """Add batch request ``lines`` (REST's shape: ``{batch_request_id?, batch_request: {<kind>:
    <request>}}``) and run each at once; their ``batch_request_id`` values, in order (one made
    up for a line without). 400 on a cancelled batch, 422 for lines that are not a non-empty
    list of objects, 409 for an id already in the batch; a request that cannot run gets an
    error result (a google.rpc.Status ``{code, message}``), the others theirs. ``headers``
    steer the chat requests as on REST (``X-Sim-Prompt-Tokens`` ...)."""
    if batch.cancelled:
        raise ApiError(400, f"Batch {batch.batch_id} is cancelled")
    if not isinstance(lines, list) or not lines:
        raise ApiError(422, "`batch_requests` must be a non-empty list")
    added = []
    for line in lines:
        if not isinstance(line, dict):
            raise ApiError(422, "each batch request must be a JSON object")
        request_id = str(line.get("batch_request_id") or uuid.uuid4())
        if request_id in batch.results:
            raise ApiError(409, f"batch_request_id {request_id} is already in the batch")
        batch.requests.append({"batch_request_id": request_id, **line})
        try:
            batch.results[request_id] = _run(state, headers, line.get("batch_request"))
        except ApiError as exc:
            code = _STATUS_CODES.get(exc.status, 13)  # 13: INTERNAL
            batch.results[request_id] = {"error": {"code": code, "message": exc.message}}
        added.append(request_id)
    return added


def results_page(
    batch: Batch, limit: int | None, token: str | None
) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    """One page of results: (``batch_request_id``, ``batch_result``) pairs in the order the
    requests were added, at most ``limit`` (None: `DEFAULT_LIMIT`; 400 outside 1 to
    `MAX_LIMIT`) from the one ``token`` names (None or empty: the first), and the token of the
    next page (None after the last)."""
    limit = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"`limit` must be from 1 to {MAX_LIMIT}, got {limit}")
    try:
        start = int(token, 16) if token else 0
    except ValueError:
        raise ApiError(400, f"Bad pagination_token {token!r}") from None
    ids = list(batch.results)[start : start + limit]
    following = format(start + limit, "x") if start + limit < len(batch.results) else None
    return [(i, batch.results[i]) for i in ids], following


def one_result(batch: Batch, request_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the request line as added, its ``batch_result``); 404 when the batch has no such
    result."""
    result = batch.results.get(request_id)
    if result is None:
        raise ApiError(404, f"No result {request_id} in batch {batch.batch_id}")
    line = next(r for r in batch.requests if r["batch_request_id"] == request_id)
    return line, result


def batch_object(batch: Batch) -> dict[str, Any]:
    """The batch as REST answers it: ``{batch_id, name, create_time, state: {num_requests,
    num_pending, num_success, num_error, num_cancelled}, cancel_time}``."""
    results = batch.results.values()
    errors = sum("error" in r for r in results)
    done = len(batch.results)
    return {
        "batch_id": batch.batch_id,
        "name": batch.name,
        "create_time": batch.create_time,
        "state": {
            "num_requests": len(batch.requests),
            "num_pending": len(batch.requests) - done,
            "num_success": done - errors,
            "num_error": errors,
            "num_cancelled": 0,
        },
        "cancel_time": batch.create_time if batch.cancelled else None,
    }


# --- the REST face ------------------------------------------------------------------------


async def create_batch(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/batches {name, input_file_id?}`."""
    req = json_body(await request.read(), request.headers)
    return json_reply(batch_object(new_batch(state, req.get("name"))))


async def list_batches(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/batches`."""
    return json_reply({"batches": [batch_object(b) for b in state.batches.values()]})


async def get_batch(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/batches/{batch_id}`."""
    return json_reply(batch_object(_batch(state, request)))


async def cancel_batch(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/batches/{batch_id}:cancel`: no request is added after it."""
    batch = _batch(state, request)
    batch.cancelled = True
    return json_reply(batch_object(batch))


async def add_batch_requests(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/batches/{batch_id}/requests {batch_requests: [...]}`: each is run at once."""
    batch = _batch(state, request)
    req = json_body(await request.read(), request.headers)
    add_requests(state, batch, request.headers, req.get("batch_requests"))
    return json_reply(batch_object(batch))


async def list_batch_requests(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/batches/{batch_id}/requests`: each request's id and state."""
    batch = _batch(state, request)
    meta = [
        {"batch_request_id": rid, "state": "failed" if "error" in result else "succeeded"}
        for rid, result in batch.results.items()
    ]
    return json_reply({"batch_request_metadata": meta})


def _limit(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"`limit` must be a whole number, got {raw!r}") from None


def _item(request_id: str, result: dict[str, Any]) -> dict[str, Any]:
    return {"batch_request_id": request_id, "batch_result": result}


async def list_batch_results(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/batches/{batch_id}/results?limit&pagination_token`: one page of results."""
    batch = _batch(state, request)
    limit = _limit(request.query.get("limit"))
    results, following = results_page(batch, limit, request.query.get("pagination_token"))
    page: dict[str, Any] = {"results": [_item(i, result) for i, result in results]}
    if following is not None:
        page["pagination_token"] = following
    return json_reply(page)


async def get_batch_result(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/batches/{batch_id}/results/{batch_request_id}`: one result, beside its request
    (``{request, result}``, as the proto's GetBatchRequestResultResponse)."""
    batch = _batch(state, request)
    request_id = request.match_info["batch_request_id"]
    line, result = one_result(batch, request_id)
    return json_reply({"request": line, "result": _item(request_id, result)})
