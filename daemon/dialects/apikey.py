"""`GET /v1/api-key`: never billed, but its answer names the key (name, team) for reports.

Shape read: ``{name, team_id, api_key_id, ...}``. Only the name, team id and key id are kept,
against the salted key id: never the key, nor its redacted form.
"""

from __future__ import annotations

from daemon.dialects.base import Clock, Dialect, Tap
from daemon.dialects.body import BodyTap
from daemon.dialects.coerce import opt_str
from daemon.record import CallRecord


class ApiKeyBody(BodyTap):
    """A 2xx `GET /v1/api-key` answer: its ``name``, ``team_id`` and ``api_key_id`` go to
    ``record.key_info``; nothing else is kept."""

    def parse(self, body: bytes) -> None:
        obj = self.success_object(body)
        if obj is None:
            return
        self.record.key_info = {
            "name": opt_str(obj.get("name")),
            "team_id": opt_str(obj.get("team_id")),
            "api_key_id": opt_str(obj.get("api_key_id")),
        }


class ApiKeyDialect(Dialect):
    """`GET /v1/api-key` (xai-api.md, "Listings"), never billed. Reads nothing of the request;
    of a GET's answer only ``{name, team_id, api_key_id}`` (`ApiKeyBody`). Other methods get a
    tap that reads nothing."""

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        return ApiKeyBody(record, clock, encoding) if record.method == "GET" else Tap(record, clock)
