"""Voice over REST: text-to-speech (`POST /v1/tts`) and speech-to-text (`POST /v1/stt`).

Neither answer reports a cost (xai-api.md, "Voice"): the usage names its catalog rate and the
quantity it prices, and pricing computes the cost from the price catalog
(`daemon.pricing.catalog`; ``cost_source = 'computed'``).

- TTS: the request ``{text, voice_id?, language, output_format?}`` is billed per input
  character. The count is ``len(text)`` in **Unicode code points**, the text exactly as the
  JSON decodes (no normalization; speech tags such as ``[pause]`` count, they are input too).
  Why code points: xAI says "per input character" without defining it; a code point is the
  unit a JSON string is made of and the only count that does not depend on an encoding (an
  emoji is 1 code point, 2 UTF-16 units, 4 UTF-8 bytes) [guess, the likeliest reading]. A body
  without ``text`` but with a string ``input`` (OpenAI's name for it) counts that [guess]. The
  answer is raw audio bytes (or JSON with timestamps): relayed untouched and **never kept or
  parsed**; the call is billed once the whole answer reached the client with a 2xx status. An
  answer cut short is unmetered (``incomplete``: whether xAI bills a cut synthesis is unknown);
  an error answer keeps its code.
- STT: a multipart upload (or a URL) answered ``{text, language, duration, words[]}``; billed
  per second of the answer's ``duration`` at the REST rate (``stt:rest``; the WebSocket
  ``/v1/stt`` streams at another rate). A 2xx answer without a usable ``duration`` (a number
  0 or more) is unmetered (``no_usage``).

The request's ``model`` is noted when it names one (JSON, or a multipart field); xAI documents
none for these endpoints, so ``model`` may stay empty.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

from daemon.dialects.base import Clock, Dialect, Tap, is_ok
from daemon.dialects.body import BodyTap
from daemon.dialects.coerce import loads_object, opt_str
from daemon.record import CallRecord, Unmetered, Usage

#: Catalog rates (`daemon.record.Usage.catalog_rate`) of these endpoints.
TTS_RATE: Final = "tts"
STT_REST_RATE: Final = "stt:rest"

# The ``model`` field of a multipart body, looked for in its first and last 64 KiB (a client
# sends the small fields before or after the audio; the audio itself is never scanned whole).
_SCAN: Final = 65536
_MULTIPART_MODEL = re.compile(rb'name="model"\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]{1,200})\r\n')


def tts_characters(obj: dict[str, Any]) -> int | None:
    """The billed character count of a TTS request: Unicode code points of ``text`` (else of a
    string ``input``); None when it has neither."""
    text = obj.get("text")
    if not isinstance(text, str):
        text = obj.get("input")
    return len(text) if isinstance(text, str) else None


class SpeechTap(BodyTap):
    """A TTS answer: the audio of a 2xx answer is neither kept nor parsed; the call is billed
    from the request's character count once the answer ended complete. A non-2xx answer is
    kept (it is a small JSON error) to read its code."""

    def feed(self, chunk: bytes) -> bytes | None:
        if is_ok(self.record):
            return None  # audio: relayed untouched, never kept
        return super().feed(chunk)

    def finish(self, complete: bool) -> bytes | None:
        record = self.record
        if not is_ok(record):
            return super().finish(complete)  # the error's code (`parse`)
        if not complete:
            record.mark_unmetered(Unmetered.INCOMPLETE)
            return None
        characters = record.text_characters
        if characters is None:
            record.mark_unmetered(Unmetered.NO_USAGE)  # no text we could count
            return None
        record.usage = Usage(catalog_rate=TTS_RATE, characters=characters)
        return None

    def parse(self, body: bytes) -> None:
        self.success_object(body)  # a non-2xx body: keeps its error code


class TtsDialect(Dialect):
    """`POST /v1/tts` (xai-api.md, "Voice"): billed per input character (`tts_characters`),
    the audio relayed as it comes (`SpeechTap`)."""

    def __init__(self) -> None:
        super().__init__("tts", billable=True)

    def inspect_request(self, record: CallRecord, body: bytes) -> bytes | None:
        record.billable = record.method == "POST"
        obj = loads_object(body) if record.billable else None
        if obj is not None:
            record.requested_model = opt_str(obj.get("model"))
            record.text_characters = tts_characters(obj)
        return None

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if not record.billable:
            return Tap(record, clock)
        return SpeechTap(record, clock, encoding)


def audio_duration(value: Any) -> float | None:
    """A ``duration`` in seconds: a finite number 0 or more (not a bool); else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    duration = float(value)
    return duration if math.isfinite(duration) and duration >= 0 else None


class TranscriptionBody(BodyTap):
    """An STT answer ``{text, language, duration, words[]}``: ``duration`` seconds at the REST
    rate; ``model`` when the answer names one."""

    def parse(self, body: bytes) -> None:
        obj = self.success_object(body)
        if obj is None:
            return
        duration = audio_duration(obj.get("duration"))
        if duration is None:
            return  # unmetered (no_usage): nothing says how much audio was billed
        if self.record.model is None:
            self.record.model = opt_str(obj.get("model"))
        self.record.usage = Usage(catalog_rate=STT_REST_RATE, audio_seconds=duration)


class SttDialect(Dialect):
    """`POST /v1/stt` (xai-api.md, "Voice"): billed per second of the answer's ``duration``
    (`TranscriptionBody`). Reads the request's ``model`` from JSON or a multipart field (in the
    body's first or last 64 KiB)."""

    def __init__(self) -> None:
        super().__init__("stt", billable=True)

    def inspect_request(self, record: CallRecord, body: bytes) -> bytes | None:
        record.billable = record.method == "POST"
        if not record.billable:
            return None
        if body.lstrip()[:1] == b"{":
            obj = loads_object(body)
            record.requested_model = opt_str(obj.get("model")) if obj is not None else None
        else:
            match = _MULTIPART_MODEL.search(body[:_SCAN])
            if match is None and len(body) > _SCAN:
                match = _MULTIPART_MODEL.search(body[-_SCAN:])
            if match is not None:
                record.requested_model = opt_str(match.group(1).decode("utf-8", "replace"))
        return None

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if not record.billable:
            return Tap(record, clock)
        return TranscriptionBody(record, clock, encoding)
