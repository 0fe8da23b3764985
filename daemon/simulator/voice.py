"""``POST /v1/tts`` and ``POST /v1/stt``: voice over REST (the WebSockets live elsewhere).

Follows xai-api.md "Voice": text-to-speech takes ``{text, voice_id?, language,
output_format?}`` and answers **raw audio bytes** (no usage, no cost: xAI bills per input
character out of band); speech-to-text takes a multipart upload (``file``, ``language?``,
``model?``) or JSON ``{url}`` and answers ``{text, language, duration, words[]}`` (no cost:
billed per second of ``duration``).

The audio is deterministic and deliberately hostile to a parser: a format header (``ID3``,
``RIFF``/``WAVE`` or none), then bytes derived from the text by SHA-256, `AUDIO_BYTES_PER_CHAR`
per character, which include CR, LF, NUL, ``data:`` and invalid UTF-8, so a relay that touches
them is caught. A transcription reads the upload as 16 kHz 16-bit mono PCM: ``duration`` is its
size / `PCM_BYTES_PER_SECOND`, rounded to milliseconds (a URL is `URL_AUDIO_SECONDS` long);
its words are made up, one per half second. Our rules where xai-api.md is silent [guess]: the
limits (`MAX_TTS_CHARACTERS`) and the formats' content types.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

from aiohttp import hdrs, web

from daemon.simulator.faults import Injection
from daemon.simulator.state import SimulatorState
from daemon.simulator.wire import ApiError, Reply, json_body, json_reply

AUDIO_BYTES_PER_CHAR: Final = 48
MAX_TTS_CHARACTERS: Final = 15_000  # per request [3p]
PCM_BYTES_PER_SECOND: Final = 32_000  # 16 kHz x 16-bit mono
URL_AUDIO_SECONDS: Final = 60.0
#: output_format -> (content type, header bytes)
AUDIO_FORMATS: Final = {
    "mp3": ("audio/mpeg", b"ID3\x04\x00\x00\x00\x00\x00\x00"),
    "wav": ("audio/wav", b"RIFF\x00\x00\x00\x00WAVEfmt "),
    "pcm": ("audio/pcm", b""),
    "mulaw": ("audio/basic", b""),
    "alaw": ("audio/x-alaw-basic", b""),
}
_HOSTILE = b"\r\n\x00data: {\xff\xfe\r\r\n\n"  # what a relay must not touch
_WORDS = ("the", "meter", "counts", "every", "second", "of", "audio", "once")


def speech_audio(text: str, output_format: str = "mp3") -> bytes:
    """The audio the simulator answers for ``text``: deterministic, `AUDIO_BYTES_PER_CHAR` per
    character after the format's header, with `_HOSTILE` bytes spliced in."""
    header = AUDIO_FORMATS[output_format][1]
    size = AUDIO_BYTES_PER_CHAR * len(text)
    seed = hashlib.sha256(f"{output_format}\x00{text}".encode()).digest()
    body = bytearray()
    block = seed
    while len(body) < size:
        block = hashlib.sha256(block).digest()
        body += block + _HOSTILE
    return header + bytes(body[:size])


async def text_to_speech(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/tts`: raw audio bytes in the requested format (default mp3)."""
    req = json_body(await request.read(), request.headers)
    text = req.get("text")
    if not isinstance(text, str) or not text:
        raise ApiError(422, "`text` must be a non-empty string")
    if len(text) > MAX_TTS_CHARACTERS:
        raise ApiError(422, f"`text` is over {MAX_TTS_CHARACTERS} characters")
    output_format = req.get("output_format") or "mp3"
    if isinstance(output_format, dict):  # {"codec": ...} as some SDKs send it
        output_format = output_format.get("codec") or "mp3"
    if output_format not in AUDIO_FORMATS:
        raise ApiError(422, f"`output_format` must be one of {', '.join(AUDIO_FORMATS)}")
    content_type = AUDIO_FORMATS[output_format][0]
    return Reply(body=speech_audio(text, output_format), content_type=content_type)


def _multipart(raw: bytes, content_type: str) -> dict[str, bytes]:
    """The parts of a multipart body by name, each its raw content."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise ApiError(400, "A multipart body needs a boundary")
    parts: dict[str, bytes] = {}
    for part in raw.split(b"--" + match.group(1).encode()):
        head, separator, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if separator and name is not None:
            parts[name.group(1).decode()] = value.removesuffix(b"\r\n")
    return parts


def transcription(duration: float, language: str) -> dict[str, Any]:
    """The answer for ``duration`` seconds of audio: one made-up word per half second."""
    words: list[dict[str, Any]] = []
    for index in range(max(1, int(duration * 2))):
        start = round(index * 0.5, 3)
        words.append(
            {
                "text": _WORDS[index % len(_WORDS)],
                "start": start,
                "end": round(min(start + 0.5, duration), 3),
            }
        )
    text = " ".join(w["text"] for w in words)
    return {"text": text, "language": language, "duration": duration, "words": words}


async def speech_to_text(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/stt`: a multipart ``file`` (or JSON ``{url}``) → ``{text, language,
    duration, words}``."""
    raw = await request.read()
    content_type = request.headers.get(hdrs.CONTENT_TYPE, "")
    if content_type.lower().startswith("multipart/form-data"):
        parts = _multipart(raw, content_type)
        audio = parts.get("file")
        if audio is None:
            raise ApiError(422, "A multipart `file` part is required")
        duration = round(len(audio) / PCM_BYTES_PER_SECOND, 3)
        language = parts.get("language", b"en").decode("utf-8", "replace") or "en"
    else:
        req = json_body(raw, request.headers)
        if not isinstance(req.get("url"), str):
            raise ApiError(422, "Send a multipart `file`, or JSON with a `url`")
        duration = URL_AUDIO_SECONDS
        language = str(req.get("language") or "en")
    body = transcription(duration, language)
    if inj.usage == "none":
        body.pop("duration")
    return json_reply(body)
