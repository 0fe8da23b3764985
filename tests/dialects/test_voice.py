"""The voice dialects on their own (xai-api.md, "Voice"): what a TTS request is billed for,
that its audio is never kept, and what an STT answer says."""

from __future__ import annotations

import pytest

from daemon.dialects.voice import SttDialect, TtsDialect, audio_duration, tts_characters
from daemon.record import CallRecord, Unmetered
from daemon.testing import make_record


def tts_call(
    request: bytes, chunks: list[bytes], status: int = 200, complete: bool = True
) -> CallRecord:
    record = make_record(endpoint="tts", path="/v1/tts", status=status)
    dialect = TtsDialect()
    dialect.inspect_request(record, request)
    tap = dialect.tap(record, "audio/mpeg", lambda: 0.0)
    for chunk in chunks:
        assert tap.feed(chunk) is None  # never alters a byte
    tap.finish(complete)
    return record


def test_characters_are_code_points_of_the_text_as_sent() -> None:
    assert tts_characters({"text": "abc"}) == 3
    assert tts_characters({"text": "😀"}) == 1  # 2 UTF-16 units, 4 UTF-8 bytes
    assert tts_characters({"text": "é", "input": "ignored"}) == 1
    assert tts_characters({"text": "e\u0301"}) == 2  # no normalization
    assert tts_characters({"text": "[pause] hi"}) == 10  # speech tags are input too
    assert tts_characters({"input": "four"}) == 4  # OpenAI's name, when text is absent
    assert tts_characters({"text": 5}) is None and tts_characters({}) is None


def test_a_json_escaped_surrogate_pair_is_one_character() -> None:
    record = tts_call(b'{"text":"\\ud83d\\ude00!","language":"en"}', [b"\xff\xfb"])
    assert record.usage is not None and record.usage.characters == 2


def test_tts_audio_is_never_kept_and_bills_once_complete() -> None:
    audio = [b"ID3\x04", b"\r\n\x00data: {\xff" * 1000, b"\xfe" * 70_000]
    record = tts_call(b'{"text":"Hello","model":"grok-tts"}', audio)
    usage = record.usage
    assert usage is not None
    assert (usage.catalog_rate, usage.characters, usage.input_tokens) == ("tts", 5, 0)
    assert (record.requested_model, record.model) == ("grok-tts", None)
    dialect = TtsDialect()
    kept = make_record(endpoint="tts", status=200)
    dialect.inspect_request(kept, b'{"text":"Hello"}')
    tap = dialect.tap(kept, "audio/mpeg", lambda: 0.0)
    tap.feed(b"x" * 1000)
    assert tap._parts == [] and tap._size == 0  # type: ignore[attr-defined]


def test_tts_cut_short_or_without_text_is_unmetered() -> None:
    cut = tts_call(b'{"text":"Hello"}', [b"ID3"], complete=False)
    assert (cut.usage, cut.unmetered_reason) == (None, Unmetered.INCOMPLETE)
    blind = tts_call(b'{"voice_id":"eve"}', [b"ID3"])
    assert (blind.usage, blind.unmetered_reason) == (None, Unmetered.NO_USAGE)


def test_a_tts_error_keeps_its_code_and_bills_nothing() -> None:
    body = b'{"code":"Client specified an invalid argument","error":"bad voice xai-abc"}'
    record = tts_call(b'{"text":"Hello"}', [body], status=400)
    assert (record.usage, record.unmetered_reason) == (None, None)
    assert record.upstream_error == "Client specified an invalid argument"


def stt_call(answer: bytes, request: bytes = b'{"url":"u","model":"grok-stt"}') -> CallRecord:
    record = make_record(endpoint="stt", path="/v1/stt")
    dialect = SttDialect()
    dialect.inspect_request(record, request)
    tap = dialect.tap(record, "application/json", lambda: 0.0)
    tap.feed(answer)
    tap.finish(True)
    return record


def test_stt_bills_the_answers_duration_at_the_rest_rate() -> None:
    record = stt_call(b'{"text":"hi","language":"en","duration":3.52,"words":[]}')
    usage = record.usage
    assert usage is not None and (usage.catalog_rate, usage.audio_seconds) == ("stt:rest", 3.52)
    assert record.requested_model == "grok-stt"
    for answer in (b'{"text":"hi"}', b'{"duration":"3.5"}', b'{"duration":-1}'):
        unmetered = stt_call(answer)
        assert (unmetered.usage, unmetered.unmetered_reason) == (None, Unmetered.NO_USAGE)


@pytest.mark.parametrize("where", ["first", "last"])
def test_stt_reads_a_multipart_model_before_or_after_the_audio(where: str) -> None:
    audio = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    audio += b"\x00\r\n" * 40_000 + b"\r\n"
    model = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\ngrok-stt\r\n'
    body = (model + audio if where == "first" else audio + model) + b"--b--\r\n"
    record = stt_call(b'{"duration":1}', body)
    assert record.requested_model == "grok-stt"


def test_audio_duration_reads_numbers_only() -> None:
    assert audio_duration(2) == 2.0 and audio_duration(0.25) == 0.25
    for bad in (True, "2", None, float("nan"), float("inf"), -0.5):
        assert audio_duration(bad) is None
