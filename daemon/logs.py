"""structlog set-up, and the one canonical log line per call.

JSON (rendered by orjson) when stderr is not a terminal, a console renderer when it is.
The call line carries ids, model, tokens, cost and timings: never a key, prompt or completion.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from daemon.record import CallRecord

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info,
    ]
    if use_json:
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
        factory: Any = structlog.BytesLoggerFactory(stream.buffer if hasattr(stream, "buffer")
                                                   else stream)
    else:
        processors.append(structlog.dev.ConsoleRenderer())
        factory = structlog.PrintLoggerFactory(stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    # aiohttp and asyncio log through the standard library: route them to the same stream.
    logging.basicConfig(level=max(LEVELS[level], logging.WARNING), stream=stream,
                        format="%(levelname)s %(name)s: %(message)s", force=True)


class CallLog:
    """The log sink: one line per finished call."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("xai_meter.call")

    def __call__(self, record: CallRecord) -> None:
        usage = record.usage
        self._log.info(
            "call", id=record.id, provider=record.provider, endpoint=record.endpoint,
            method=record.method, status=record.status, stream=record.stream,
            model=record.model or record.requested_model,
            input_tokens=usage.input_tokens if usage else None,
            cached_input_tokens=usage.cached_input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            reasoning_tokens=usage.reasoning_tokens if usage else None,
            cost_ticks=record.cost_ticks, cost_source=record.cost_source,
            fingerprint=record.fingerprint,
            duration_ms=None if record.duration_ms is None else round(record.duration_ms, 2),
            ttft_ms=None if record.ttft_ms is None else round(record.ttft_ms, 2),
            error=record.error.value if record.error else None,
            unmetered=record.unmetered_reason.value if record.unmetered_reason else None,
            key_id=record.key_id, app=record.app,
        )
