"""The Responses API over a WebSocket (``/v1/responses`` upgraded): a billed row per turn.

xai-api.md, "Responses" (WebSocket mode): the client sends ``response.create`` messages (a create
body plus ``"type"``); the upstream answers each with the same events a stream sends over SSE,
one message each, and a turn is billed at its terminal event. Turns run in order on a socket (one
in flight at a time, as xAI and OpenAI document); should a client send the next before the last
ended, each terminal event still ends the oldest turn open, so none is lost.

One turn is one row (`transport = 'websocket'`, endpoint ``responses``, ``stream`` 1, method
``GET`` as the upgrade's): born at its ``response.create`` (``requested_model``,
``previous_response_id``), answered at its ``response.created`` (status 200, ``upstream_ms``;
its id, model, fingerprint and tier), first token at its first output delta (``ttft_ms``), ended
at its terminal event with that event's usage, read by `daemon.dialects.responses.read_event`
as over HTTP (cost reported, tools by kind). An ``error`` event before the turn's
``response.created`` is the answer to its create: the row ends with the event's ``status``
(400 when it gives none [guess]) and the error's code, unbilled as any error answer. A socket
that ends mid-turn leaves that turn one unmetered row: ``incomplete`` once it was answered,
``no_response`` before. The upgrade itself is no row (unless refused: `daemon.websocket`) once
a turn began; a session that never began one (only unreadable or binary messages, or none)
is one unbilled row, the upgrade's (status 101, no usage, as a voice session's row), so every
relayed socket leaves at least one row.
"""

from __future__ import annotations

import collections
from typing import ClassVar

from daemon.dialects.base import read_error
from daemon.dialects.coerce import loads_object, opt_int, opt_str
from daemon.dialects.responses import ResponseStream, read_event
from daemon.dialects.sockets import Ending, Rows, SocketTap
from daemon.record import CallRecord, Stage, Unmetered

_CREATE = b"response.create"
# Events the meter decodes: the answer's first (id, model) and those ResponseStream decodes
# over SSE (terminal events and errors). Every other event only gets a substring test.
_NEEDLES = (b"response.created", *ResponseStream.needles)
_FIRST_TOKEN = ResponseStream.first_token
_ERROR_STATUS = 400  # an error event without a status of its own [guess]


class ResponsesSocketTap(SocketTap):
    """A row per ``response.create`` → terminal event (see the module docstring)."""

    endpoint: ClassVar[str | None] = "responses"
    billable: ClassVar[bool] = True

    def __init__(self, upgrade: CallRecord, rows: Rows) -> None:
        super().__init__(upgrade, rows)
        self.turns: collections.deque[CallRecord] = collections.deque()
        self.turned = False  # a turn began: the turns are the rows, the upgrade is none

    def opened(self) -> None:
        super().opened()
        self.upgrade.billable = False  # the session's row, until a turn begins: bills nothing

    def client_message(self, data: bytes, text: bool) -> None:
        if not text or _CREATE not in data:
            return
        obj = loads_object(data)
        if obj is None or obj.get("type") != "response.create":
            return
        if not self.turned:
            self.turned = True
            self.rows.discard(self.upgrade)  # the turns are the rows
        turn = self.rows.new()
        turn.billable = True
        turn.stream = True
        turn.sent = True
        turn.stage = Stage.REQUEST
        turn.requested_model = opt_str(obj.get("model"))
        turn.previous_response_id = opt_str(obj.get("previous_response_id"))
        self.turns.append(turn)
        self.idle.clear()

    def server_message(self, data: bytes, text: bool) -> None:
        if not text or not self.turns:
            return
        turn = self.turns[0]
        if turn.ttft_ms is None and _FIRST_TOKEN.search(data):
            turn.ttft_ms = (self.rows.clock() - turn.t0) * 1000.0
        if not any(needle in data for needle in _NEEDLES):
            return
        obj = loads_object(data)
        if obj is None:
            return
        if obj.get("type") == "error" and turn.stage < Stage.RESPONSE_HEADERS:
            read_error(turn, obj)
            status = opt_int(obj.get("status"))
            turn.status = status if status is not None and 400 <= status < 600 else _ERROR_STATUS
            turn.stage = Stage.RESPONSE_HEADERS
            self._end_turn()
            return
        if turn.stage < Stage.RESPONSE_HEADERS and isinstance(obj.get("response"), dict):
            turn.status = 200
            turn.upstream_ms = (self.rows.clock() - turn.t0) * 1000.0
            turn.stage = Stage.RESPONSE_HEADERS
        if read_event(turn, obj):
            self._end_turn()
        else:
            turn.usage = None  # usage before the terminal event is provisional: never booked

    def _end_turn(self) -> None:
        self.rows.finish(self.turns.popleft())
        if not self.turns:
            self.idle.set()

    def close(self, ending: Ending) -> None:
        """Turns still open end unmetered: the socket ended before their terminal event. A
        session without a turn ends its one unbilled row, the upgrade's."""
        if not self.turned:
            ending.apply(self.upgrade, in_flight=False)
            self.rows.finish(self.upgrade)
        while self.turns:
            turn = self.turns.popleft()
            turn.usage = None
            ending.apply(turn, in_flight=True)
            answered = turn.stage >= Stage.RESPONSE_HEADERS
            turn.mark_unmetered(Unmetered.INCOMPLETE if answered else Unmetered.NO_RESPONSE)
            self.rows.finish(turn)
        self.idle.set()
