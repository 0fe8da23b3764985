"""API keys: the check every route passes first, and ``GET /v1/api-key``.

As xai-api.md "Headers and errors" says: a missing key is 401, an invalid one 400. Any key but
`INVALID_KEY` is accepted, as ``Authorization: Bearer``, (Anthropic-style) ``x-api-key``, or,
on a WebSocket, a ``xai-client-secret.<token>`` subprotocol.
``/v1/api-key`` describes the key the way xAI does, redacted (xai-api.md "Other endpoints").
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web

from daemon.simulator.faults import Injection
from daemon.simulator.state import SimulatorState
from daemon.simulator.wire import ApiError, Reply, json_reply

INVALID_KEY = "invalid-key"  # the one API key the simulator rejects (400, like a wrong real key)
_CLIENT_SECRET = "xai-client-secret."  # a WebSocket subprotocol carrying a client secret
_ID_NAMESPACE = uuid.UUID("6f1c0a52-58a4-4b4e-9d0e-3b2f7c1d9e10")


def check_key(headers: Mapping[str, str]) -> None:
    """Raise the `ApiError` 401 (no key) or 400 (`INVALID_KEY`) for a request's key (HTTP
    headers or gRPC metadata, case-insensitive); return when it is accepted."""
    key = api_key_of(headers)
    if not key:
        raise ApiError(401, "No API key provided. Send it as `Authorization: Bearer <key>`.")
    if key == INVALID_KEY:
        raise ApiError(
            400,
            f"Incorrect API key provided: {_redact(key)}. "
            "You can obtain an API key from https://console.x.ai.",
        )


def auth_error(headers: Mapping[str, str]) -> Reply | None:
    """The 401 (no key) or 400 (`INVALID_KEY`) answer for a request's key; None: accepted."""
    try:
        check_key(headers)
    except ApiError as exc:
        return exc.reply()
    return None


def api_key_of(headers: Mapping[str, str]) -> str | None:
    """The request's API key: ``Authorization: Bearer`` first, then ``x-api-key``."""
    auth = headers.get(hdrs.AUTHORIZATION, "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    for offered in headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(","):
        # a browser's WebSocket: the client secret as a subprotocol (xai-api.md "Voice")
        protocol = offered.strip()
        if protocol.startswith(_CLIENT_SECRET) and len(protocol) > len(_CLIENT_SECRET):
            return protocol[len(_CLIENT_SECRET) :]
    return headers.get("x-api-key", "").strip() or None


def _redact(key: str) -> str:
    return f"{key[:4]}...{key[-4:]}" if len(key) > 12 else "****"


@functools.lru_cache(maxsize=4096)  # every request asks (the billing book's caller)
def api_key_id(key: str) -> str:
    """The ``api_key_id`` xAI gives a key: a stable UUID per key here (the Management API
    lists keys by the same id, `daemon.simulator.management`)."""
    return str(uuid.uuid5(_ID_NAMESPACE, "key:" + key))


def redact(key: str) -> str:
    """A key as xAI shows it: its first and last four characters."""
    return _redact(key)


def key_description(state: SimulatorState, key: str) -> dict[str, Any]:
    """How xAI describes an API key (``GET /v1/api-key``, gRPC ``Auth/get_api_key_info``): the
    name and ``disabled`` of its `ManagedKey` when the state has one."""
    user_id = str(uuid.uuid5(_ID_NAMESPACE, "user"))
    managed = state.managed_keys.get(api_key_id(key))
    return {
        "redacted_api_key": _redact(key),
        "user_id": user_id,
        "name": managed.name if managed is not None else "sim-key",
        "create_time": "2025-01-01T00:00:00Z",
        "modify_time": "2025-01-01T00:00:00Z",
        "modified_by": user_id,
        "team_id": state.team_id,
        "acls": ["api-key:model:*", "api-key:endpoint:*"],
        "api_key_id": api_key_id(key),
        "team_blocked": False,
        "api_key_blocked": False,
        "api_key_disabled": managed.disabled if managed is not None else False,
    }


async def api_key_info(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`GET /v1/api-key`: the key's description, redacted, with the state's team id."""
    return json_reply(key_description(state, api_key_of(request.headers) or ""))
