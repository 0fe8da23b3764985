"""The socket tap contract: what meters a relayed WebSocket session, message by message.

`daemon.websocket` relays a WebSocket upgrade under an upstream's ``/v1/`` and makes one
`SocketTap` for it, chosen by path (`daemon.dialects.socket_tap`). The tap:

- is born with the upgrade request's record (`SocketTap.upgrade`: who, where, when) and reads
  what the upgrade says (`inspect_upgrade`: its query string);
- hears `opened` when the upstream accepted the upgrade (a refused upgrade is the relay's to
  record: the upgrade record becomes that one row, unbilled);
- sees a copy of every text and binary message each way (`client_message`, `server_message`),
  after it was sent on, so it never delays one, and never alters one (text comes as its raw
  UTF-8 bytes); it parses only the messages that can carry what it needs;
- owns the rows it meters: it makes them with `Rows.new` and ends each, once, with
  `Rows.finish`; `close` (the session is over, however it ended: an `Ending`) ends every row
  it still has.
  A tap that raises is dropped (its rows end unmetered, ``parser_error``) and the frames flow on.

The base class meters nothing: one unbilled row per session (the upgrade's record), for sockets
no dialect knows. One subclass per API: `daemon.dialects.responses_socket` (a row per turn),
`daemon.dialects.voice_sockets` (realtime, TTS, STT: a row per session).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final, Protocol

from daemon.record import CallError, CallRecord, Stage

#: Close codes of a session that ended as it should (RFC 6455 7.4.1: normal closure, going away;
#: 1005: a close frame that gave no code).
NORMAL_CLOSE: Final = frozenset({1000, 1001, 1005})


@dataclass(frozen=True, slots=True)
class Ending:
    """How a socket session ended (`daemon.websocket` says; taps apply it to their rows).

    ``error`` is the session's: None when either side closed it normally (`NORMAL_CLOSE`), else
    what ended it (``client_disconnect``: the client closed abnormally or vanished;
    ``upstream_stream_cut``: the upstream did; ``shutdown``; ``relay_error``). ``cut`` is what
    cut a row still waiting for its answer (a turn in flight), whichever way the session ended.
    ``upstream_code`` is the upstream's close code when the upstream closed it.
    """

    error: CallError | None
    cut: CallError
    detail: str
    upstream_code: int | None = None

    def apply(self, record: CallRecord, in_flight: bool) -> None:
        """Mark a row this ending ends: failed with ``cut`` (in flight) or ``error`` (if any);
        the upstream's abnormal close code kept as its error (``ws_close_<code>``)."""
        error = self.cut if in_flight else self.error
        if error is not None:
            record.fail(error, self.detail)
        code = self.upstream_code
        if code is not None and code not in NORMAL_CLOSE and record.upstream_error is None:
            record.upstream_error = f"ws_close_{code}"


class Rows(Protocol):
    """Where a tap gets its rows and ends them (`daemon.websocket` keeps the books)."""

    def new(self) -> CallRecord:
        """A new row of this socket, born now and begun (journaled: a row whatever happens):
        provider, endpoint, path, key, app, transport and upstream request id as the
        upgrade's; method ``GET``."""
        ...

    def clock(self) -> float:
        """Monotonic seconds, the clock of ``CallRecord.t0``."""
        ...

    def finish(self, record: CallRecord) -> None:
        """End a row: its duration and final stage are set and it goes to the meter. A row is
        finished once: finishing it again does nothing."""
        ...

    def discard(self, record: CallRecord) -> None:
        """Drop a row that will never be one (the upgrade record of a tap that makes its own):
        its start in the journal is made void."""
        ...


class SocketTap:
    """Meters one WebSocket session (see the module docstring). This class: one unbilled row,
    the upgrade's record, with status 101 once the upstream accepted it."""

    #: the endpoint its rows are counted under; None: the HTTP path table's name for the path
    endpoint: ClassVar[str | None] = None
    billable: ClassVar[bool] = False

    def __init__(self, upgrade: CallRecord, rows: Rows) -> None:
        self.upgrade = upgrade
        self.rows = rows
        # Set while no row of this session waits for the upstream (a turn in flight clears
        # it): a draining daemon closes the socket once it is set.
        self.idle = asyncio.Event()
        self.idle.set()

    def inspect_upgrade(self, query: Mapping[str, str]) -> None:
        """Read what the upgrade request says (its query string, decoded)."""

    def opened(self) -> None:
        """The upstream accepted the upgrade (status 101): the session row's answer came, and
        it is billable from now on (a failed upgrade bills nothing)."""
        self.upgrade.status = 101
        self.upgrade.stage = Stage.RESPONSE_HEADERS
        self.upgrade.billable = self.billable

    def client_message(self, data: bytes, text: bool) -> None:
        """A message the client sent (already relayed): raw bytes, ``text`` for a text one."""

    def server_message(self, data: bytes, text: bool) -> None:
        """A message the upstream sent (already relayed)."""

    def close(self, ending: Ending) -> None:
        """The session ended: end every row still open (`Ending.apply`)."""
        ending.apply(self.upgrade, in_flight=False)
        self.rows.finish(self.upgrade)
