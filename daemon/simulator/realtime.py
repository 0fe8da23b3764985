"""The voice WebSockets: realtime ``/v1/realtime``, streaming TTS ``/v1/tts``, streaming STT
``/v1/stt`` (xai-api.md "Voice"; shapes from docs.x.ai's Voice Agent, Text to Speech and
Speech to Text pages). None reports a cost: xAI bills them by audio duration or characters.
Faults and auth as for every socket (`daemon.simulator.sockets`).

Realtime (OpenAI-Realtime-shaped events, JSON text messages):

- the session starts with ``conversation.created``; its input audio is 16-bit PCM at 24 kHz
  until a ``session.update`` sets ``session.audio.input.format`` to ``{"type": "audio/pcm",
  "rate": R}`` (8000-48000 Hz) or ``{"type": "audio/pcmu" | "audio/pcma"}`` (G.711, 8 kHz),
  or OpenAI's older ``session.input_audio_format`` (``pcm16``, ``g711_ulaw``, ``g711_alaw``),
  which wins when an update names both; once the older one is in the session the two are kept
  in step (the older one dropped for PCM at a rate it cannot name); answered by
  ``session.updated`` with the whole session;
- ``input_audio_buffer.append {audio: base64}`` buffers audio (no answer);
  ``input_audio_buffer.commit`` makes it a user item (``input_audio_buffer.committed``),
  ``input_audio_buffer.clear`` drops it; ``conversation.item.create`` adds a text item;
- ``response.create`` answers ``response.created``, a transcript and an audio delta per word,
  and ``response.done`` whose ``response.usage`` is ``{total_tokens, input_tokens,
  output_tokens, input_token_details{text_tokens, audio_tokens, cached_tokens},
  output_token_details{text_tokens, audio_tokens}}``: `AUDIO_TOKENS_PER_SECOND` per second of
  committed audio, a text item's words plus 4, the conversation before this turn cached (the
  previous turn's input), and per reply word one text and `OUTPUT_AUDIO_TOKENS_PER_WORD` audio
  tokens. The model is the ``?model=`` asked for; ``grok-voice-latest`` (the default) answers
  as ``grok-voice-think-fast-2.0`` [3p].

TTS: query ``voice``, ``language``, ``codec``; ``text.delta {delta}`` messages, then
``text.done``, are answered by ``audio.delta {delta: base64}`` per word (`TTS_BYTES_PER_CHAR`
bytes a character) and ``audio.done``; the socket then takes the next utterance.

STT: query ``sample_rate`` (8000, 16000 (default), 22050, 24000, 44100, 48000) and
``encoding`` (``pcm``, 2 bytes a sample (default); ``mulaw``, ``alaw``, 1 byte); audio comes as
binary messages, ``{"type": "audio.done"}`` ends an utterance, answered by ``transcript.done
{text, words, duration}`` (seconds, 2 decimals); a bad query answers the upgrade 400.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from daemon.simulator.faults import INJECTION_KEY, send
from daemon.simulator.prompts import reply_choices, word_deltas
from daemon.simulator.sockets import (
    Outbox,
    Turns,
    accept,
    error_event,
    finish,
    json_message,
    messages,
    send_turn,
)
from daemon.simulator.state import STATE_KEY
from daemon.simulator.wire import ApiError, error_reply

AUDIO_TOKENS_PER_SECOND = 10  # input audio tokens per second of committed audio
OUTPUT_AUDIO_TOKENS_PER_WORD = 5
TEXT_ITEM_TOKENS = 4  # a text item's tokens on top of its words
OUTPUT_AUDIO_BYTES_PER_WORD = 480  # 10 ms of 24 kHz pcm16 per reply word
TTS_BYTES_PER_CHAR = 32
STT_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
STT_SAMPLE_BYTES = {"pcm": 2, "mulaw": 1, "alaw": 1}
_VOICE_MODELS = {"grok-voice-latest": "grok-voice-think-fast-2.0"}  # [3p]
_PCM_RATES = range(8000, 48001)


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass(slots=True)
class _Conversation:
    """A realtime session: its settings, its audio buffer and what the conversation holds."""

    model: str
    session: dict[str, Any]
    buffered: int = 0  # bytes of audio appended and not yet committed or cleared
    audio_seconds: float = 0.0  # committed audio not yet answered
    text_tokens: int = 0  # text items not yet answered
    context_tokens: int = 0  # the input of the previous turn: cached in the next
    seed: bytes = field(default_factory=lambda: hashlib.sha256(b"realtime").digest())

    def bytes_per_second(self) -> int:
        fmt = self.session["audio"]["input"]["format"]
        return 8000 if fmt["type"] != "audio/pcm" else 2 * int(fmt["rate"])


def _default_session(model: str) -> dict[str, Any]:
    pcm = {"type": "audio/pcm", "rate": 24000}
    return {
        "id": _id("sess"),
        "object": "realtime.session",
        "model": model,
        "voice": "eve",
        "instructions": "",
        "turn_detection": None,
        "audio": {"input": {"format": dict(pcm)}, "output": {"format": dict(pcm)}},
    }


def _input_format(update: Any) -> dict[str, Any] | None:
    """The input format a ``session.update`` asks for (None: unchanged); `ApiError` if bad."""
    audio = update.get("audio") if isinstance(update, dict) else None
    audio_in = audio.get("input") if isinstance(audio, dict) else None
    fmt = audio_in.get("format") if isinstance(audio_in, dict) else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("audio/pcmu", "audio/pcma"):
        return {"type": kind, "rate": 8000}
    if kind == "audio/pcm":
        rate = fmt.get("rate", 24000)
        if type(rate) is not int or rate not in _PCM_RATES:
            raise ApiError(400, f"audio/pcm rate must be 8000-48000 Hz, got {rate!r}")
        return {"type": kind, "rate": rate}
    raise ApiError(400, f"Unsupported audio format {kind!r}")


#: OpenAI's older ``input_audio_format`` values → the ``audio.input.format`` each is.
_LEGACY_FORMATS: dict[str, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu", "rate": 8000},
    "g711_alaw": {"type": "audio/pcma", "rate": 8000},
}


def _legacy_name(fmt: dict[str, Any]) -> str | None:
    """The older ``input_audio_format`` name of an ``audio.input.format``; None: it has none
    (PCM at a rate other than 24 kHz)."""
    return next((name for name, known in _LEGACY_FORMATS.items() if known == fmt), None)


def _set_input_format(session: dict[str, Any], update: Any) -> None:
    """Apply a ``session.update``'s input format to the session, both fields kept in step: the
    older ``input_audio_format``, when named, wins (as the meter reads a client's message),
    else the newer ``audio.input.format``; `ApiError` for a format it does not take."""
    legacy = update.get("input_audio_format") if isinstance(update, dict) else None
    if legacy is not None:
        if legacy not in _LEGACY_FORMATS:
            raise ApiError(400, f"Unsupported input_audio_format {legacy!r}")
        fmt: dict[str, Any] | None = dict(_LEGACY_FORMATS[legacy])
    else:
        fmt = _input_format(update)
    if fmt is None:
        return
    session["audio"]["input"]["format"] = fmt
    if legacy is not None:
        session["input_audio_format"] = legacy
    elif "input_audio_format" in session:  # set before: kept in step with the newer field
        name = _legacy_name(fmt)
        if name is not None:
            session["input_audio_format"] = name
        else:
            del session["input_audio_format"]


def _decoded_length(audio: Any) -> int:
    if not isinstance(audio, str):
        raise ApiError(400, "`audio` must be a base64 string")
    try:
        return len(base64.b64decode(audio, validate=True))
    except binascii.Error:
        raise ApiError(400, "`audio` is not valid base64") from None


def _answer(conv: _Conversation, response_id: str) -> tuple[list[str], dict[str, Any]]:
    """The reply words of a turn and its usage (see the module doc)."""
    audio_tokens = int(conv.audio_seconds * AUDIO_TOKENS_PER_SECOND)
    input_tokens = conv.context_tokens + conv.text_tokens + audio_tokens
    conv.seed = hashlib.sha256(conv.seed + response_id.encode()).digest()
    words = reply_choices(conv.seed, 1, False, None, None)[0].words
    output_audio = OUTPUT_AUDIO_TOKENS_PER_WORD * len(words)
    usage = {
        "total_tokens": input_tokens + len(words) + output_audio,
        "input_tokens": input_tokens,
        "output_tokens": len(words) + output_audio,
        "input_token_details": {
            "text_tokens": conv.context_tokens + conv.text_tokens,
            "audio_tokens": audio_tokens,
            "cached_tokens": conv.context_tokens,
        },
        "output_token_details": {"text_tokens": len(words), "audio_tokens": output_audio},
    }
    conv.context_tokens = input_tokens + len(words)
    conv.audio_seconds, conv.text_tokens = 0.0, 0
    return words, usage


async def _respond(out: Outbox, conv: _Conversation) -> bool:
    """One ``response.create``: the events of a spoken answer. False: the session ended."""
    response_id = _id("resp")
    words, usage = _answer(conv, response_id)
    item_id = _id("item")
    item = {"id": item_id, "type": "message", "role": "assistant", "status": "completed"}
    shell = {"id": response_id, "object": "realtime.response", "status": "in_progress"}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {**shell, "output": [], "usage": None}},
        {"type": "response.output_item.added", "response_id": response_id, "item": item},
    ]
    for delta in word_deltas(words):
        where = {"response_id": response_id, "item_id": item_id}
        events.append({"type": "response.output_audio_transcript.delta", **where, "delta": delta})
        chunk = hashlib.sha256(delta.encode()).digest() * (OUTPUT_AUDIO_BYTES_PER_WORD // 32)
        audio = base64.b64encode(chunk).decode()
        events.append({"type": "response.output_audio.delta", **where, "delta": audio})
    transcript = " ".join(words)
    events.append({"type": "response.output_audio_transcript.done", "transcript": transcript})
    events.append({"type": "response.output_audio.done", "response_id": response_id})
    done = {**shell, "status": "completed", "output": [item], "usage": usage}
    events.append({"type": "response.done", "response": done})
    return await send_turn(out, events)


async def _realtime_event(
    out: Outbox, turns: Turns, conv: _Conversation, event: dict[str, Any]
) -> bool:
    """Handle one client event (a response runs as a turn); False when the session ended."""
    kind = event["type"]
    if kind == "input_audio_buffer.append":
        conv.buffered += _decoded_length(event.get("audio"))
        return True
    if kind == "session.update":
        update = event.get("session")
        if isinstance(update, dict):
            _set_input_format(conv.session, update)  # raises before anything changes
            conv.session.update(
                {k: v for k, v in update.items() if k not in ("audio", "input_audio_format")}
            )
        return await out.send({"type": "session.updated", "session": conv.session})
    if kind == "input_audio_buffer.commit":
        if not conv.buffered:
            raise ApiError(400, "The input audio buffer is empty")
        conv.audio_seconds += conv.buffered / conv.bytes_per_second()
        conv.buffered = 0
        return await out.send({"type": "input_audio_buffer.committed", "item_id": _id("item")})
    if kind == "input_audio_buffer.clear":
        conv.buffered = 0
        return await out.send({"type": "input_audio_buffer.cleared"})
    if kind == "conversation.item.create":
        item = event.get("item")
        content = item.get("content") if isinstance(item, dict) else None
        texts = [
            part.get("text", "")
            for part in (content if isinstance(content, list) else [])
            if isinstance(part, dict)
        ]
        conv.text_tokens += sum(len(str(t).split()) for t in texts) + TEXT_ITEM_TOKENS
        added = {**(item if isinstance(item, dict) else {}), "id": _id("item")}
        return await out.send({"type": "conversation.item.added", "item": added})
    if kind == "response.create":
        turns.add(functools.partial(_respond, out, conv))
        return True
    raise ApiError(400, f"Unknown client event type {kind!r}")


async def realtime_socket(request: web.Request) -> web.StreamResponse:
    """``GET /v1/realtime?model=...`` upgraded: the voice agent (see the module doc)."""
    asked = request.query.get("model", "grok-voice-latest")
    model = _VOICE_MODELS.get(asked, asked)
    ws, log = await accept(request)
    out = Outbox(request, ws, log)
    conv = _Conversation(model, _default_session(model))
    starting = request.app[STATE_KEY].realtime_input_format
    if starting is not None:
        conv.session["audio"]["input"]["format"] = dict(starting)
    created = {"type": "conversation.created", "conversation": {"id": _id("conv")}}
    if not await out.send(created):
        return ws
    turns = Turns()
    try:
        async with contextlib.aclosing(messages(request, ws, log)) as incoming:
            async for msg in incoming:
                try:
                    if msg.type is not WSMsgType.TEXT:
                        raise ApiError(400, "Binary messages are not accepted: send JSON events")
                    going = await _realtime_event(out, turns, conv, json_message(msg.data))
                except ApiError as exc:
                    going = await out.send(error_event(exc))
                if not going:
                    return ws
    finally:
        await turns.stop()
    await finish(ws)
    return ws


async def _speak(out: Outbox, utterance: str) -> bool:
    """One utterance's audio: an ``audio.delta`` per word, then ``audio.done``."""
    events: list[dict[str, Any]] = []
    for word in utterance.split(" "):
        size = TTS_BYTES_PER_CHAR * (len(word) + 1)
        audio = (hashlib.sha256(word.encode()).digest() * TTS_BYTES_PER_CHAR)[:size]
        events.append({"type": "audio.delta", "delta": base64.b64encode(audio).decode()})
    events.append({"type": "audio.done"})
    return await send_turn(out, events)


async def tts_socket(request: web.Request) -> web.StreamResponse:
    """``GET /v1/tts`` upgraded: streaming text to speech (see the module doc)."""
    ws, log = await accept(request)
    out = Outbox(request, ws, log)
    turns = Turns()
    text: list[str] = []
    try:
        async with contextlib.aclosing(messages(request, ws, log)) as incoming:
            async for msg in incoming:
                try:
                    if msg.type is not WSMsgType.TEXT:
                        raise ApiError(400, "Binary messages are not accepted: send JSON events")
                    event = json_message(msg.data)
                    if event["type"] == "text.delta":
                        delta = event.get("delta")
                        if not isinstance(delta, str):
                            raise ApiError(400, "`delta` must be a string")
                        text.append(delta)
                    elif event["type"] == "text.done":
                        utterance, text = "".join(text), []
                        if not utterance:
                            raise ApiError(400, "No text to speak")
                        turns.add(functools.partial(_speak, out, utterance))
                    else:
                        raise ApiError(400, f"Unknown client event type {event['type']!r}")
                except ApiError as exc:
                    if not await out.send(error_event(exc)):
                        return ws
    finally:
        await turns.stop()
    await finish(ws)
    return ws


async def stt_socket(request: web.Request) -> web.StreamResponse:
    """``GET /v1/stt?sample_rate=&encoding=`` upgraded: streaming speech to text."""
    encoding = request.query.get("encoding", "pcm")
    raw_rate = request.query.get("sample_rate", "16000")
    rate = int(raw_rate) if raw_rate.isdigit() else 0
    if encoding not in STT_SAMPLE_BYTES or rate not in STT_RATES:
        message = f"Unsupported encoding {encoding!r} or sample_rate {raw_rate!r}"
        return await send(request, error_reply(400, message), request[INJECTION_KEY])
    bytes_per_second = STT_SAMPLE_BYTES[encoding] * rate
    ws, log = await accept(request)
    out = Outbox(request, ws, log)
    received = 0
    async with contextlib.aclosing(messages(request, ws, log)) as incoming:
        async for msg in incoming:
            if msg.type is WSMsgType.BINARY:
                received += len(msg.data)
                continue
            try:
                event = json_message(msg.data)
                if event["type"] != "audio.done":
                    raise ApiError(400, f"Unknown client event type {event['type']!r}")
                duration = received / bytes_per_second
                seed = hashlib.sha256(str(received).encode()).digest()
                words = reply_choices(seed, 1, False, None, None)[0].words
                step = duration / len(words)
                done = {
                    "type": "transcript.done",
                    "text": " ".join(words),
                    "words": [
                        {"text": w, "start": round(i * step, 2), "end": round((i + 1) * step, 2)}
                        for i, w in enumerate(words)
                    ],
                    "duration": round(duration, 2),
                }
                received = 0
                going = await out.send(done) and await out.turn_done()
            except ApiError as exc:
                going = await out.send(error_event(exc))
            if not going:
                return ws
    await finish(ws)
    return ws
