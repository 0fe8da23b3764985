"""Dialects: one module per API dialect, and here the one table of which path each serves.

`Router` maps a request path (under an upstream's ``/v1/``) to its `Dialect` and so to the
bounded endpoint name the call is counted under. The rooms of this package:

- `base`: the contract (`Dialect`, `Tap`) and the rules every dialect shares
- `body`, `sse`: the two tap shapes, a whole JSON body and a stream of server-sent events
- `coerce`, `encoding`: reading untrusted JSON values; undoing a Content-Encoding for the tap
- `chat`, `responses`, `messages`, `images`, `apikey`: one dialect each (see xai-api.md)
- `completions`: the two legacy text completions, OpenAI's and Anthropic's
- `sockets`: the WebSocket tap contract; `responses_socket` (a row per turn) and `voice_sockets`
  (realtime, TTS, STT: a row per session) meter the sockets `socket_tap` names by path
- `voice`: text-to-speech and speech-to-text over REST, priced from the catalog
- `videos`: video requests (deferred) and their polls; `batches`: the Batch API's results pages,
  each result a derived record of its own
"""

from __future__ import annotations

import re
from collections.abc import Callable

from daemon.dialects.apikey import ApiKeyDialect
from daemon.dialects.base import Clock, Dialect, Tap
from daemon.dialects.batches import BatchResultsDialect
from daemon.dialects.chat import ChatDialect, DeferredResultDialect
from daemon.dialects.completions import CompleteDialect, CompletionsDialect
from daemon.dialects.images import ImageResultDialect, ImagesDialect
from daemon.dialects.messages import MessagesDialect
from daemon.dialects.responses import ResponsesDialect
from daemon.dialects.responses_socket import ResponsesSocketTap
from daemon.dialects.sockets import SocketTap
from daemon.dialects.videos import VideoDialect, VideoResultDialect
from daemon.dialects.voice import SttDialect, TtsDialect
from daemon.dialects.voice_sockets import RealtimeTap, SttSocketTap, TtsSocketTap
from daemon.record import CallRecord

__all__ = ["OtherDialect", "Router", "socket_tap"]

# Path (under the upstream's /v1/) -> dialect. Endpoints without a parser of their own are
# relayed and recorded, never billed. The name is a metric label, so unknown paths share one
# name ("other") and labels stay bounded.
_ROUTES: tuple[tuple[str, Dialect], ...] = (
    (r"/v1/chat/completions", ChatDialect()),
    (r"/v1/chat/deferred-completion/[^/]+", DeferredResultDialect()),
    (r"/v1/responses(?:/[^/]+)?", ResponsesDialect()),
    (r"/v1/messages", MessagesDialect()),
    (r"/v1/completions", CompletionsDialect()),
    (r"/v1/complete", CompleteDialect()),
    (r"/v1/images/generations", ImagesDialect("images.generations")),
    (r"/v1/images/edits", ImagesDialect("images.edits")),
    (r"/v1/images/[^/]+", ImageResultDialect()),  # a deferred image's poll
    (r"/v1/tts", TtsDialect()),
    (r"/v1/stt", SttDialect()),
    (r"/v1/api-key", ApiKeyDialect("api-key")),
    (r"/v1/messages/.+", Dialect("messages")),
    (r"/v1/responses/.+", Dialect("responses")),
    (r"/v1/models(?:/[^/]+)?", Dialect("models")),
    (r"/v1/language-models(?:/[^/]+)?", Dialect("language-models")),
    (r"/v1/image-generation-models(?:/[^/]+)?", Dialect("image-generation-models")),
    (r"/v1/tokenize-text", Dialect("tokenize-text")),
    (r"/v1/embeddings", Dialect("embeddings")),
    (r"/v1/videos/generations", VideoDialect("generations")),
    (r"/v1/videos/edits", VideoDialect("edits")),
    (r"/v1/videos/extensions", VideoDialect("extensions")),
    (r"/v1/videos/[^/]+", VideoResultDialect()),
    (r"/v1/video-generation-models(?:/[^/]+)?", Dialect("video-generation-models")),
    (r"/v1/batches/[^/]+/results(?:/[^/]+)?", BatchResultsDialect()),
    (r"/v1/batches(?:/.*)?", Dialect("batches")),
    (r"/v1/files(?:/.*)?", Dialect("files")),
)


class OtherDialect(Dialect):
    """The paths no dialect knows (endpoint ``other``): relayed and recorded, never billed.

    ``on_404``, when set, is told of each such call the upstream answered 404, as its tap is
    made (the status is known by then): how `daemon.missing_v1` notices a base URL whose /v1
    the client's SDK doubled (``/v1/v1/messages``), at no cost to any call of a known path."""

    def __init__(self) -> None:
        super().__init__("other")
        self.on_404: Callable[[CallRecord], object] | None = None

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if record.status == 404 and self.on_404 is not None:
            self.on_404(record)
        return Tap(record, clock)


class Router:
    """Maps a path under /v1/ to its dialect; built once, looked up per call. `other` is the
    dialect of every path it does not know (its own, per router)."""

    def __init__(self) -> None:
        self._exact = {
            pattern: d for pattern, d in _ROUTES if not any(c in pattern for c in "[(.+*?")
        }
        self._patterns = [
            (re.compile(pattern + "$"), d) for pattern, d in _ROUTES if pattern not in self._exact
        ]
        self.other = OtherDialect()

    def dialect(self, path: str) -> Dialect:
        """The dialect for ``path`` (no query string); ``other`` (never billed) when none."""
        found = self._exact.get(path)
        if found is not None:
            return found
        for pattern, dialect in self._patterns:
            if pattern.match(path):
                return dialect
        return self.other


# WebSocket upgrades (daemon.websocket): path (under the upstream's /v1/) -> the tap that meters
# a session there. Any other /v1/ path is relayed all the same, as one unbilled row.
_SOCKET_TAPS: dict[str, type[SocketTap]] = {
    "/v1/responses": ResponsesSocketTap,
    "/v1/realtime": RealtimeTap,
    "/v1/tts": TtsSocketTap,
    "/v1/stt": SttSocketTap,
}


def socket_tap(path: str) -> type[SocketTap]:
    """The tap class for a WebSocket upgraded at ``path`` (no query string); `SocketTap` (one
    unbilled row per session, named as the HTTP table names the path) for any other."""
    return _SOCKET_TAPS.get(path, SocketTap)
