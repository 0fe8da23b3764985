"""Which dialect serves a request path, and the bounded endpoint name it is counted under."""

from __future__ import annotations

import re

from daemon.dialects import Dialect
from daemon.dialects.chat import ChatDialect

# Endpoints without a parser of their own: relayed and recorded, never billed. The name is a
# metric label, so unknown paths share one name ("other") and labels stay bounded.
_UNBILLED: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), name)
    for pattern, name in (
        (r"^/v1/chat/deferred-completion/[^/]+$", "chat.deferred"),
        (r"^/v1/responses(/.*)?$", "responses"),
        (r"^/v1/messages(/.*)?$", "messages"),
        (r"^/v1/images/generations$", "images.generations"),
        (r"^/v1/images/edits$", "images.edits"),
        (r"^/v1/models(/[^/]+)?$", "models"),
        (r"^/v1/language-models(/[^/]+)?$", "language-models"),
        (r"^/v1/image-generation-models(/[^/]+)?$", "image-generation-models"),
        (r"^/v1/tokenize-text$", "tokenize-text"),
        (r"^/v1/api-key$", "api-key"),
        (r"^/v1/embeddings$", "embeddings"),
        (r"^/v1/completions$", "completions"),
    )
)


class Router:
    """Maps (method, path under /v1/) to a dialect; built once, looked up per call."""

    def __init__(self) -> None:
        self._chat = ChatDialect()
        self._unbilled = {name: Dialect(name) for _, name in _UNBILLED}
        self._other = Dialect("other")

    def dialect(self, method: str, path: str) -> Dialect:
        if path == "/v1/chat/completions":
            return self._chat if method == "POST" else self._other
        for pattern, name in _UNBILLED:
            if pattern.match(path):
                return self._unbilled[name]
        return self._other
