"""API keys are never stored or logged: a salted HMAC identifies a key across calls, and any key
the daemon knows is masked as ``[key]`` in text that goes to the ledger or to a log line.

- `api_key_of`: the key a client sent (``Authorization: Bearer`` or ``x-api-key``).
- `KeyHasher`: key -> key id, an HMAC of the key's exact bytes under the salt (which lives in a
  file of its own, `daemon.salt`). Each key it meets is remembered in `KNOWN_KEYS`.
- `KnownKeys`: the keys this process may meet in text: the configured ones (pinned: every
  upstream's ``api_key``, the pricing key) and the client keys of recent calls, by key id
  (bounded). `scrub_record` masks a finished call's own key, and the pinned ones, in every text
  field of its record (and of the rows derived from it) and makes that text storable; `scrub`
  masks every known key in a string (the log processors of `daemon.logs`, the second net).

One mask for every key, whatever it looks like: an upstream may echo the key it was sent in
its error code or message (xai-api.md, "Headers and errors"), and a key need not start with
``xai-`` or ``sk-``. The record never holds the key: the mask finds it through the record's key
id, so nothing but this bounded table keeps keys, in memory only. Keys shorter than
`MIN_KEY_CHARS` are not masked (no secret, and masking them would eat ordinary words).

One table per process (`KNOWN_KEYS`), as logging is: the log processors have no daemon to ask.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
from collections import deque
from dataclasses import fields

from multidict import CIMultiDictProxy

from daemon.record import CallRecord

_CACHE_LIMIT = 4096

MASK = "[key]"
MIN_KEY_CHARS = 4
REMEMBERED_KEYS = 4096  # client keys kept by key id (a call's own key is found through its id)
LOGGED_KEYS = 256  # the most recent of them that the log net looks for: bounded cost per line


def api_key_of(headers: CIMultiDictProxy[str]) -> str | None:
    """The key a client sent: `Authorization: Bearer <key>` (OpenAI, xAI) or `x-api-key`.

    Only HTTP's own white space (space, tab) is trimmed, so the key is the header's bytes as
    they came (aiohttp decodes a header as UTF-8, a byte that is not as a lone surrogate).
    """
    auth = headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        token = token.strip(" \t")
        if scheme.lower() == "bearer" and token:
            return token
    key = headers.get("x-api-key")
    return key.strip(" \t") or None if key else None


def key_bytes(key: str) -> bytes:
    """The bytes a key came as: aiohttp decodes header bytes with UTF-8 and
    ``surrogateescape`` (a byte that is not UTF-8 becomes U+DC80..U+DCFF), so encoding back
    the same way gives them exactly. Any other lone surrogate (not from a header) is kept as
    its own code point's bytes."""
    try:
        return key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogatepass")


class KnownKeys:
    """Keys to mask: pinned (configured) ones, and the most recent client keys by key id.

    Bounded: at most `remembered` client keys (the oldest is forgotten first), the `logged`
    most recent of them looked for in log lines. Written on the event loop; `scrub` may run in
    any thread (it reads one tuple, swapped whole, rebuilt lazily: a flood of new keys costs
    an append each, not a rebuild each).
    """

    def __init__(self, remembered: int = REMEMBERED_KEYS, logged: int = LOGGED_KEYS) -> None:
        self._remembered = remembered
        self._pinned: tuple[str, ...] = ()
        self._by_id: dict[str, str] = {}
        self._recent: deque[str] = deque(maxlen=logged)
        self._for_logs: tuple[str, ...] | None = ()  # pinned + recent, longest first

    def pin(self, key: str | None) -> None:
        """A configured key (an upstream's, the pricing key): masked everywhere, always."""
        if key and len(key) >= MIN_KEY_CHARS and key not in self._pinned:
            self._pinned = (*self._pinned, key)
            self._for_logs = None

    def remember(self, key_id: str, key: str) -> None:
        """A client's key and its id (`KeyHasher`, once per key it hashes)."""
        if len(key) < MIN_KEY_CHARS:
            return
        by_id = self._by_id
        by_id.pop(key_id, None)
        if len(by_id) >= self._remembered:
            del by_id[next(iter(by_id))]
        by_id[key_id] = key
        self._recent.append(key)
        self._for_logs = None

    def forget(self) -> None:
        """Forget every key (tests)."""
        self._pinned, self._by_id, self._for_logs = (), {}, ()
        self._recent.clear()

    def scrub(self, text: str) -> str:
        """`text` with every known key replaced by `MASK` (longest first, so a key inside
        another leaves nothing of the longer one)."""
        keys = self._for_logs
        if keys is None:
            recent = tuple(self._recent)
            keys = self._for_logs = tuple(sorted({*self._pinned, *recent}, key=len, reverse=True))
        for key in keys:
            if key in text:
                text = text.replace(key, MASK)
        return text

    def key_of(self, key_id: str) -> str | None:
        """The client key behind a key id, if this process still holds it (memory only: the
        management refresher asks ``GET /v1/api-key`` with it once)."""
        return self._by_id.get(key_id)

    def keys_for(self, key_id: str | None) -> tuple[str, ...]:
        """The keys a call's text is masked for: its own (by its key id) and the pinned."""
        own = self._by_id.get(key_id) if key_id is not None else None
        pinned = self._pinned
        return pinned if own is None else (own, *pinned) if pinned else (own,)

    def scrub_record(self, record: CallRecord) -> None:
        """Mask the call's own key (found by its key id) and the pinned keys in every text
        field of `record` and of its derived rows, and make that text storable (UTF-8: a lone
        surrogate, from a header byte that was not UTF-8 or a JSON escape, becomes
        ``\\udcff``-style text; SQLite and orjson refuse it). Once per call, at its end
        (`daemon.dialects.base.end_call`): about a microsecond."""
        if not record.key_info and not record.derived:  # the usual record: one join, one pass
            joined = "\0".join(filter(None, _texts_of(record)))
            own = self._by_id.get(record.key_id) if record.key_id else None
            if (
                joined.isascii()
                and (own is None or own not in joined)
                and not any(key in joined for key in self._pinned)
            ):
                return
        keys = self.keys_for(record.key_id)
        _clean(record, keys)
        if record.derived:
            for derived in record.derived:
                _clean(derived, keys)


KNOWN_KEYS = KnownKeys()


# The text fields of a record that the client or the upstream may fill (an error code or
# message, a model name, a path, a header): masked before they are stored. The daemon's own
# (ids, provider, endpoint, method, linked_id, video_request) are left out: each field costs.
_OURS = frozenset(("id", "key_id", "provider", "endpoint", "method", "linked_id", "video_request"))
_TEXT_FIELDS = tuple(
    f.name for f in fields(CallRecord) if f.type in ("str", "str | None") and f.name not in _OURS
)
_texts_of = operator.attrgetter(*_TEXT_FIELDS)


def _storable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean_text(text: str, keys: list[str], storable: bool) -> str:
    for key in keys:
        if key in text:
            text = text.replace(key, MASK)
    return text if storable or _utf8(text) else _storable(text)


def _clean(record: CallRecord, keys: tuple[str, ...]) -> None:
    """Mask `keys` in the record's text fields, and make them storable. The usual record is
    ASCII and holds no key: one join, one `in` per key, and no field is written."""
    values: tuple[str | None, ...] = _texts_of(record)
    joined = "\0".join(filter(None, values))
    info = record.key_info
    if info:
        joined += "\0" + "\0".join(filter(None, info.values()))
    hits = [k for k in keys if k in joined] if keys else None
    storable = joined.isascii() or _utf8(joined)
    if storable and not hits:
        return
    found = hits or []
    for name, value in zip(_TEXT_FIELDS, values, strict=True):
        if value:
            setattr(record, name, _clean_text(value, found, storable))
    if info:
        record.key_info = {k: _clean_text(v, found, storable) if v else v for k, v in info.items()}


class KeyHasher:
    """`key_id(key)` = "k_" + 16 hex digits of HMAC-SHA256(salt, the key's bytes); memoized
    per key. Each key hashed is remembered in `known` (`KNOWN_KEYS` unless given), so the
    masks can find it."""

    def __init__(self, salt: bytes, known: KnownKeys | None = None) -> None:
        self._salt = salt
        self._cache: dict[str, str] = {}
        self._known = KNOWN_KEYS if known is None else known

    def use_salt(self, salt: bytes) -> None:
        """Set once the salt file is read (`daemon.salt`); forgets ids made before."""
        self._salt = salt
        self._cache.clear()

    def key_id(self, key: str | None) -> str | None:
        if key is None:
            return None
        found = self._cache.get(key)
        if found is None:
            digest = hmac.new(self._salt, key_bytes(key), hashlib.sha256).hexdigest()
            found = "k_" + digest[:16]
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = found
            self._known.remember(found, key)
        return found
