"""structlog set-up, and the one canonical log line per call.

JSON (rendered by orjson) when stderr is not a terminal, a console renderer when it is
(`ConsoleLines`: a compact, aligned line per call, other events without their None fields).
The call line carries ids, model, tokens, cost and timings: never a key, prompt or completion;
it is at warning level when the call's status is 5xx, else at info.
Every other line passes `scrub_keys` (the standard library's, `ScrubKeys`): any key the daemon
knows (`daemon.keys.KNOWN_KEYS`) becomes ``[key]``, whatever it looks like.

Process-global state, on purpose: logging is one per process (structlog's configuration, the
standard library's root logger), and so is this module's coalescing writer (`_writer`,
`_fast_json`), set by `configure` and undone by `reset`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, BinaryIO

import orjson
import structlog

from daemon.keys import KNOWN_KEYS
from daemon.record import CallRecord
from daemon.units import format_usd

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class CoalescingWriter:
    """Log lines written within one short window leave in one write.

    A write and flush per line costs as much as relaying a call; under load, lines from many
    calls now share one. Outside an event loop (start-up, threads) a line is written at once.
    """

    def __init__(self, raw: BinaryIO, window: float = 0.05) -> None:
        self._raw = raw
        self._window = window
        self._parts: list[bytes] = []
        self._handle: asyncio.TimerHandle | None = None

    def write(self, data: bytes) -> int:
        self._parts.append(data)
        if self._handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush_now()
                return len(data)
            self._handle = loop.call_later(self._window, self.flush_now)
        return len(data)

    def flush(self) -> None:
        """structlog flushes after every line; the window's timer does it instead."""

    def flush_now(self) -> None:
        self._handle = None
        parts, self._parts = self._parts, []  # one atomic swap: threads may write too
        if parts:
            self._raw.write(b"".join(parts))
            self._raw.flush()


_writer: CoalescingWriter | None = None


def flush() -> None:
    """Write out buffered log lines (at shutdown, and at exit)."""
    if _writer is not None:
        _writer.flush_now()


atexit.register(flush)


def reset() -> None:
    """Back to structlog's defaults (tests that configured logging onto a captured stream)."""
    global _writer, _fast_json
    flush()
    _writer = _fast_json = None
    structlog.reset_defaults()


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    global _writer, _fast_json
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # A traceback is text before it is scrubbed (the console too: its own formatter would
        # show it past the scrubber).
        structlog.processors.format_exc_info,
        scrub_keys,
    ]
    if use_json:
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
        flush()
        _writer = CoalescingWriter(stream.buffer if hasattr(stream, "buffer") else stream)
        factory: Any = structlog.BytesLoggerFactory(_writer)  # type: ignore[arg-type]
        _fast_json = _writer if LEVELS[level] <= logging.INFO else None
    else:
        _fast_json = None
        processors.append(ConsoleLines(colors=stream.isatty()))
        factory = structlog.PrintLoggerFactory(stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    # aiohttp and asyncio log through the standard library: route them to the same stream.
    logging.basicConfig(
        level=max(LEVELS[level], logging.WARNING),
        stream=stream,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for handler in logging.root.handlers:
        handler.addFilter(ScrubKeys())


_EXEMPT = frozenset(("event", "level", "timestamp", "logger"))  # the daemon's own words


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return KNOWN_KEYS.scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    if isinstance(value, BaseException):
        return KNOWN_KEYS.scrub(f"{type(value).__name__}: {value}")
    return value


def scrub_keys(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor, the second net: every key the daemon knows (`KNOWN_KEYS`: the
    configured ones and recent calls' keys) becomes ``[key]`` in every value of a log line,
    whatever its prefix. A call's own row and call line were masked when it ended; this
    catches keys in other lines (an upstream's error quoted in a warning, a traceback)."""
    for name, value in event_dict.items():
        if name not in _EXEMPT and not isinstance(value, int | float | bool | None):
            event_dict[name] = _scrub_value(value)
    return event_dict


class ScrubKeys(logging.Filter):
    """The same net for the standard library's lines (aiohttp, asyncio): the message and its
    traceback, formatted once here and scrubbed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format: logging's own handler reports it
            return True
        record.msg = KNOWN_KEYS.scrub(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = KNOWN_KEYS.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = KNOWN_KEYS.scrub(record.stack_info)
        return True


class CallLog:
    """The log sink: one line per finished call.

    With the JSON format at info level, the line is rendered straight to the coalescing writer
    (the same JSON structlog's renderer would make): structlog's processor chain per call costs
    as much as relaying the call. Elsewhere (console, tests) it goes through structlog.
    """

    def __init__(self) -> None:
        self._log = structlog.get_logger("xai_meter.call")

    def __call__(self, record: CallRecord) -> None:
        usage = record.usage
        duration, ttft = record.duration_ms, record.ttft_ms
        status = record.status
        warn = status is not None and status >= 500  # 5xx: the upstream's (or our 503/504)
        # Enums go as they are: orjson writes a StrEnum as its value, structlog's renderer
        # as its str(), the same text.
        fields = {
            "id": record.id,
            "provider": record.provider,
            "endpoint": record.endpoint,
            "transport": record.transport,  # http | grpc | websocket
            "method": record.method,
            "status": record.status,
            "stream": record.stream,
            "model": record.model or record.requested_model,
            "input_tokens": None,
            "cached_input_tokens": None,
            "output_tokens": None,
            "reasoning_tokens": None,
            "cost_ticks": record.cost_ticks,
            "cost_source": record.cost_source,
            "fingerprint": record.fingerprint,
            "duration_ms": None if duration is None else round(duration, 2),
            "ttft_ms": None if ttft is None else round(ttft, 2),
            "error": record.error,
            "unmetered": record.unmetered_reason,
            "key_id": record.key_id,
            "app": record.app,
        }
        if usage is not None:
            fields["input_tokens"] = usage.input_tokens
            fields["cached_input_tokens"] = usage.cached_input_tokens
            fields["output_tokens"] = usage.output_tokens
            fields["reasoning_tokens"] = usage.reasoning_tokens
        writer = _fast_json
        if writer is None:
            if warn:
                self._log.warning("call", **fields)
            else:
                self._log.info("call", **fields)
            return
        fields["event"] = "call"
        fields["level"] = "warning" if warn else "info"
        fields["timestamp"] = _utc_now_iso()
        writer.write(orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE))


_fast_json: CoalescingWriter | None = None  # set by configure() for JSON at info level or below


class ConsoleLines:
    """The console renderer (``log.format = "console"``, or a terminal with ``auto``).

    A call's line (`CallLog`) is compact, its columns aligned from line to line (`call_line`);
    every other event is structlog's `ConsoleRenderer` line without its None-valued fields.
    Colours only on a terminal. Slower than the JSON path, and only ever runs on a terminal
    (or where asked for)."""

    def __init__(self, colors: bool) -> None:
        self._console = structlog.dev.ConsoleRenderer(colors=colors)
        self._styles = (
            structlog.dev.ConsoleRenderer.get_default_level_styles(colors) if colors else None
        )

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> str:
        stamp = event_dict.get("timestamp")
        if isinstance(stamp, str) and len(stamp) > 24 and stamp.endswith("Z"):
            event_dict["timestamp"] = stamp[:23] + "Z"  # milliseconds are enough to read
        if event_dict.get("event") == "call" and "cost_ticks" in event_dict:
            return call_line(event_dict, self._styles)
        return self._console(logger, method, {k: v for k, v in event_dict.items() if v is not None})


#: The level's column, as wide as structlog's console renderer makes it ("[warning  ]").
_LEVEL_WIDTH = 9
_RESET, _DIM = "\x1b[0m", "\x1b[2m"
_MODEL_WIDTH = 24  # the model's column; a longer name is cut with "…"


def call_line(fields: dict[str, Any], styles: dict[str, str] | None = None) -> str:
    """One call's console line: time, level, model (cut to its column with ``…``), tokens
    (input, cached input, output), cost in USD (to the millionth of a dollar; ``unpriced`` for
    a call with usage but no price, ``-`` for one without usage: a failed or unmetered call,
    nothing to price), latency in ms, HTTP status and endpoint, each column aligned; then, only
    when set, ``error=``, ``unmetered=`` and ``app=``. `fields` are `CallLog`'s (`None` where
    unknown, shown as ``-``)."""
    level = str(fields.get("level", "info"))
    stamp, shown = str(fields.get("timestamp", "")), f"[{level.ljust(_LEVEL_WIDTH)}]"
    if styles is not None:  # as structlog's console colours its lines
        stamp = f"{_DIM}{stamp}{_RESET}"
        shown = f"[{styles.get(level, '')}{level.ljust(_LEVEL_WIDTH)}{_RESET}]"
    ticks, duration, status = (
        fields.get("cost_ticks"),
        fields.get("duration_ms"),
        fields.get("status"),
    )
    model = str(fields.get("model") or "-")
    if len(model) > _MODEL_WIDTH:
        model = model[: _MODEL_WIDTH - 1] + "…"
    tokens = (
        f"{_count(fields.get('input_tokens')):>9} in "
        f"{_count(fields.get('cached_input_tokens')):>9} cached "
        f"{_count(fields.get('output_tokens')):>8} out"
    )
    if ticks is not None:
        cost = "$" + format_usd(ticks, places=6)
    else:  # pricing marks a call with usage it found no price for; one without usage: none
        cost = "unpriced" if fields.get("cost_source") == "unpriced" else "-"
    latency = "-" if duration is None else f"{duration:,.0f}"
    code = "-" if status is None else str(status)
    endpoint = fields.get("endpoint") or "-"
    line = f"{stamp} {shown} {model.ljust(_MODEL_WIDTH)} {tokens} {cost:>11} {latency:>8} ms"
    line += f" {code:>3} {endpoint}"
    extras = [
        f"{name}={fields[key]}"
        for name, key in (("error", "error"), ("unmetered", "unmetered"), ("app", "app"))
        if fields.get(key) is not None
    ]
    return " ".join([line, *extras])


def _count(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def _utc_now_iso() -> str:
    """What structlog's TimeStamper(fmt="iso", utc=True) writes; the date part is formatted
    once a second (formatting it per call costs more than the rest of the line), the
    microseconds from the integer clock (no float rounding)."""
    second, ns = divmod(time.time_ns(), 1_000_000_000)
    cached = _second
    if second != cached[0]:
        cached[0] = second
        cached[1] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
    return f"{cached[1]}{ns // 1000:06d}Z"
