"""The voice WebSockets: realtime ``/v1/realtime``, streaming TTS ``/v1/tts``, streaming STT
``/v1/stt``; one billed row per session, priced from the catalog (none reports a cost).

Shapes from xai-api.md "Voice" and docs.x.ai's Voice Agent, Text to Speech and Speech to Text
pages; what each row counts:

- **realtime** (``catalog_rate = "realtime"``, per minute of audio): the seconds of audio the
  client sent, from every ``input_audio_buffer.append`` message's base64 ``audio`` (its decoded
  length, counted from the string without decoding it) at the session's input format: 16-bit
  PCM at the session's rate (24 kHz until told otherwise [doc: xAI's default]), or G.711 µ-law
  / A-law at 8 kHz (one byte a sample). A format is named in ``session.audio.input.format``
  (``{"type": "audio/pcm", "rate": R}``, ``audio/pcmu``, ``audio/pcma``) or OpenAI's older
  ``session.input_audio_format`` (``pcm16`` at 24 kHz, ``g711_ulaw``, ``g711_alaw``); mono
  [doc: xAI's default; no channel setting is documented]. Which one counts: the app encodes
  the audio it sends, so the format the **client** last declared (a ``session.update``; one
  naming both fields: the older one, `client_bytes_per_second`) wins; the upstream's
  ``session.created``/``session.updated`` (its new field first, `input_bytes_per_second`)
  applies only until the client declares one. An echo that names both, disagreeing, cannot
  override what the client said.
  Tokens: the sum of every ``response.done``'s ``response.usage`` (input, cached input, output),
  informational; the model: the upstream's ``session.model``, else the ``?model=`` asked for.
- **tts** (``catalog_rate = "tts"``, per character): the characters (Unicode code points) of
  every ``text.delta`` message's ``delta`` the client sent.
- **stt** (``catalog_rate = "stt:streaming"``, per hour of audio): the seconds of audio in the
  client's binary messages, at the upgrade's ``?sample_rate=`` (default 16000) and
  ``?encoding=`` (``pcm``: 2 bytes a sample, the default; ``mulaw``, ``alaw``: 1 byte), mono.
  An encoding or rate it cannot read leaves the row unmetered (``malformed``).

The quantities are measured here, not reported, so a session's row is metered however it ended
(its ``error`` says how); the price is the catalog's in force when the session began.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any, ClassVar

from daemon.dialects.base import note_model_and_id
from daemon.dialects.coerce import as_int, loads_object, opt_str, sub
from daemon.dialects.sockets import Ending, SocketTap
from daemon.record import Unmetered, Usage

_PCM16_24K = 48_000  # bytes a second: 16-bit mono at 24 kHz, the realtime default
_G711 = 8_000  # bytes a second: 1 byte a sample at 8 kHz
_LEGACY_FORMATS = {"pcm16": _PCM16_24K, "g711_ulaw": _G711, "g711_alaw": _G711}
_STT_SAMPLE_BYTES = {"pcm": 2, "mulaw": 1, "alaw": 1}
_STT_DEFAULT_RATE = 16_000


def base64_length(text: str) -> int:
    """The decoded length of a base64 string, without decoding it (padded or not)."""
    return len(text.rstrip("=")) * 3 // 4


def input_bytes_per_second(session: Any) -> int | None:
    """Bytes a second of the input audio a realtime ``session`` object names; None: it names
    none (or one this meter cannot read)."""
    if not isinstance(session, dict):
        return None
    fmt = sub(sub(session.get("audio"), "input"), "format")
    kind = fmt.get("type")
    if kind == "audio/pcm":
        rate = fmt.get("rate", 24_000)
        return 2 * rate if type(rate) is int and rate > 0 else None
    if kind in ("audio/pcmu", "audio/pcma"):
        return _G711
    legacy = session.get("input_audio_format")
    return _LEGACY_FORMATS.get(legacy) if isinstance(legacy, str) else None


def client_bytes_per_second(session: Any) -> int | None:
    """Bytes a second of the input audio a client's ``session.update`` declares: the older
    ``input_audio_format`` when the message names it (set explicitly, it is the app's word;
    the newer field beside it may be a copy of a session the app read back), else the newer
    ``audio.input.format`` (`input_bytes_per_second`); None: it declares none this meter
    can read."""
    if isinstance(session, dict):
        legacy = session.get("input_audio_format")
        if isinstance(legacy, str) and legacy in _LEGACY_FORMATS:
            return _LEGACY_FORMATS[legacy]
    return input_bytes_per_second(session)


class VoiceTap(SocketTap):
    """A voice session: one billed row, the upgrade's, priced by its ``catalog_rate``."""

    billable: ClassVar[bool] = True
    rate: ClassVar[str]

    def close(self, ending: Ending) -> None:
        record = self.upgrade
        if record.status == 101:  # the session ran: its measure is its usage
            record.usage = self.usage()
            if record.usage is None:
                record.mark_unmetered(Unmetered.MALFORMED)
        super().close(ending)

    def usage(self) -> Usage | None:
        """The session's measure, as priced by the catalog; None: it cannot be measured."""
        raise NotImplementedError


class RealtimeTap(VoiceTap):
    """``/v1/realtime``: audio seconds sent, tokens from ``response.done`` (module docstring)."""

    endpoint: ClassVar[str | None] = "realtime"
    rate: ClassVar[str] = "realtime"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.bytes_per_second = _PCM16_24K
        self.declared = False  # the client named a format: the upstream's no longer counts
        self.seconds = Fraction(0)
        self.tokens = Usage()

    def inspect_upgrade(self, query: Mapping[str, str]) -> None:
        self.upgrade.requested_model = opt_str(query.get("model"))

    def client_message(self, data: bytes, text: bool) -> None:
        if not text:
            return
        obj = loads_object(data)
        if obj is None:
            return
        kind = obj.get("type")
        if kind == "input_audio_buffer.append":
            audio = obj.get("audio")
            if isinstance(audio, str):
                self.seconds += Fraction(base64_length(audio), self.bytes_per_second)
        elif kind == "session.update":
            found = client_bytes_per_second(obj.get("session"))
            if found is not None:
                self.bytes_per_second = found
                self.declared = True

    def server_message(self, data: bytes, text: bool) -> None:
        if not text or not (b"response.done" in data or b"session." in data):
            return
        obj = loads_object(data)
        if obj is None:
            return
        kind = obj.get("type")
        if kind == "response.done":
            self._add_usage(sub(sub(obj, "response"), "usage"))
        elif kind in ("session.created", "session.updated"):
            session = sub(obj, "session")
            note_model_and_id(self.upgrade, session.get("model"))
            found = None if self.declared else input_bytes_per_second(session)
            if found is not None:
                self.bytes_per_second = found

    def _add_usage(self, u: dict[str, Any]) -> None:
        t = self.tokens
        t.input_tokens += as_int(u.get("input_tokens"))
        t.cached_input_tokens += as_int(sub(u, "input_token_details").get("cached_tokens"))
        t.output_tokens += as_int(u.get("output_tokens"))

    def usage(self) -> Usage | None:
        t = self.tokens
        return Usage(
            input_tokens=t.input_tokens,
            cached_input_tokens=min(t.cached_input_tokens, t.input_tokens),
            output_tokens=t.output_tokens,
            catalog_rate=self.rate,
            audio_seconds=float(self.seconds),
        )


class TtsSocketTap(VoiceTap):
    """``/v1/tts``: characters of text sent (module docstring)."""

    endpoint: ClassVar[str | None] = "tts"
    rate: ClassVar[str] = "tts"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.characters = 0

    def client_message(self, data: bytes, text: bool) -> None:
        if not text or b"text.delta" not in data:
            return
        obj = loads_object(data)
        if obj is not None and obj.get("type") == "text.delta":
            delta = obj.get("delta")
            if isinstance(delta, str):
                self.characters += len(delta)

    def usage(self) -> Usage | None:
        return Usage(catalog_rate=self.rate, characters=self.characters)


class SttSocketTap(VoiceTap):
    """``/v1/stt``: seconds of binary audio sent, by the upgrade's query (module docstring)."""

    endpoint: ClassVar[str | None] = "stt"
    rate: ClassVar[str] = "stt:streaming"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.bytes_per_second: int | None = None
        self.received = 0

    def inspect_upgrade(self, query: Mapping[str, str]) -> None:
        sample_bytes = _STT_SAMPLE_BYTES.get(query.get("encoding", "pcm").strip().lower())
        raw_rate = query.get("sample_rate", "").strip()
        rate = int(raw_rate) if raw_rate.isdigit() else None if raw_rate else _STT_DEFAULT_RATE
        if sample_bytes is not None and rate:
            self.bytes_per_second = sample_bytes * rate

    def client_message(self, data: bytes, text: bool) -> None:
        if not text:
            self.received += len(data)

    def usage(self) -> Usage | None:
        if self.bytes_per_second is None:
            return None
        seconds = Fraction(self.received, self.bytes_per_second)
        return Usage(catalog_rate=self.rate, audio_seconds=float(seconds))
