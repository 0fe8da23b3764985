"""API keys are never stored or logged: a salted HMAC identifies a key across calls."""

from __future__ import annotations

import hashlib
import hmac

from multidict import CIMultiDictProxy

_CACHE_LIMIT = 4096


def api_key_of(headers: CIMultiDictProxy[str]) -> str | None:
    """The key a client sent: `Authorization: Bearer <key>` (OpenAI, xAI) or `x-api-key`."""
    auth = headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    return key.strip() or None if key else None


class KeyHasher:
    """`key_id(key)` = "k_" + 16 hex digits of HMAC-SHA256(salt, key); memoized per key."""

    def __init__(self, salt: bytes) -> None:
        self._salt = salt
        self._cache: dict[str, str] = {}

    def use_salt(self, salt: bytes) -> None:
        """Set once the ledger (where the salt lives) is open; forgets ids made before."""
        self._salt = salt
        self._cache.clear()

    def key_id(self, key: str | None) -> str | None:
        if key is None:
            return None
        found = self._cache.get(key)
        if found is None:
            digest = hmac.new(self._salt, key.encode(), hashlib.sha256).hexdigest()
            found = "k_" + digest[:16]
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = found
        return found
