"""Webhook notifications: a JSON POST per event, retried with backoff, off the hot path."""

from __future__ import annotations

from typing import Any

import aiohttp
import structlog
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential_jitter
from yarl import URL

from daemon.meter.fingerprints import FingerprintChange

log = structlog.get_logger("xai_meter.notify")


async def notify_webhook(
    session: aiohttp.ClientSession,
    url: str,
    change: FingerprintChange,
    attempts: int = 5,
    wait: Any = None,
) -> bool:
    """POST the change; True once the receiver answered 2xx, False after the last attempt."""
    payload = {"event": "fingerprint_changed", **change.as_dict()}
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(attempts),
            reraise=True,
            wait=wait or wait_exponential_jitter(multiplier=0.5, max=30, jitter=0.5),
        ):
            with attempt:
                async with session.post(
                    url, json=payload, timeout=aiohttp.ClientTimeout(total=10)
                ) as resp:
                    if resp.status >= 300:
                        raise aiohttp.ClientResponseError(
                            resp.request_info, (), status=resp.status, message=resp.reason or ""
                        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        # The URL may carry a secret token (chat webhooks do): log its host only.
        log.error("webhook_failed", host=URL(url).host, attempts=attempts, error=str(exc))
        return False
    return True
