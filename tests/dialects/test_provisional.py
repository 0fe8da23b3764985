"""A count not known final is never booked as final, in every dialect that streams usage.

Each stream here carries usage that is only provisional (a Messages ``message_start``, a Nov 2024
chat chunk before ``[DONE]``, a Responses event before the terminal one, a legacy completion chunk
before ``[DONE]``, an Anthropic legacy event without its ``stop_reason``): ended there, cleanly or
cut, the call is unmetered ``incomplete`` with no tokens. The same streams with their final event
are metered with exactly the final counts.
"""

from __future__ import annotations

import json

import pytest

from daemon.dialects.base import Dialect
from daemon.dialects.chat import ChatDialect
from daemon.dialects.completions import CompleteDialect, CompletionsDialect
from daemon.dialects.messages import MessagesDialect
from daemon.dialects.responses import ResponsesDialect
from daemon.dialects.sse import split_events
from daemon.record import CallRecord, Unmetered, Usage
from daemon.testing import make_record


def event(obj: dict[str, object], name: str | None = None) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + json.dumps(obj).encode() + b"\n\n"


def run(dialect: Dialect, path: str, body: bytes, request: bytes, complete: bool) -> CallRecord:
    record = make_record(endpoint=dialect.endpoint, path=path, stream=True)
    dialect.inspect_request(record, request)
    tap = dialect.tap(record, "text/event-stream", lambda: 1.0)
    assert tap.feed(body) is None or tap.filters
    tap.finish(complete)
    return record


# --- Messages: message_start (xAI: 0/0) is provisional until message_delta -----------------

MSG_START = event(
    {
        "type": "message_start",
        "message": {
            "id": "9f0c7a52-3b1e-4d6a-8e2f-5c7b9a1d3e60",
            "model": "grok-4.3",
            "usage": {"input_tokens": 0, "output_tokens": 0},
        },
    },
    "message_start",
)
MSG_TEXT = event(
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    "content_block_delta",
)
MSG_DELTA = event(
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"input_tokens": 57, "output_tokens": 9, "cache_read_input_tokens": 16},
    },
    "message_delta",
)
MSG_STOP = event({"type": "message_stop"}, "message_stop")
MSG_REQUEST = b'{"model":"grok-4.3","stream":true,"max_tokens":20}'


@pytest.mark.parametrize("complete", [True, False])
def test_messages_without_message_delta_is_incomplete(complete: bool) -> None:
    record = run(
        MessagesDialect(), "/v1/messages", MSG_START + MSG_TEXT + MSG_STOP, MSG_REQUEST, complete
    )
    assert record.usage is None
    assert record.unmetered_reason is Unmetered.INCOMPLETE and not record.metered
    assert record.model == "grok-4.3"


def test_messages_with_message_delta_is_metered_exactly() -> None:
    body = MSG_START + MSG_TEXT + MSG_DELTA + MSG_STOP
    record = run(MessagesDialect(), "/v1/messages", body, MSG_REQUEST, True)
    assert record.metered
    # cache reads are outside the upstream's input_tokens (xai-api.md, 2026): 57 + 16 in all
    assert record.usage == Usage(input_tokens=73, cached_input_tokens=16, output_tokens=9)


def delta(usage: dict[str, int]) -> bytes:
    return event(
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage},
        "message_delta",
    )


def test_xai_message_delta_without_the_prompt_side_is_incomplete() -> None:
    """xAI's message_start says 0/0; a message_delta with the output count only leaves the
    prompt's size unknown: 0 input tokens for 20 out is no bill, it is a missing number."""
    body = MSG_START + MSG_TEXT + delta({"output_tokens": 20}) + MSG_STOP
    record = run(MessagesDialect(), "/v1/messages", body, MSG_REQUEST, True)
    assert record.usage is None and record.unmetered_reason is Unmetered.INCOMPLETE


def test_anthropic_message_start_states_the_prompt_and_the_delta_the_output() -> None:
    start = event(
        {
            "type": "message_start",
            "message": {
                "id": "msg_01",
                "model": "claude-x",
                "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1},
            },
        },
        "message_start",
    )
    body = start + MSG_TEXT + delta({"output_tokens": 20}) + MSG_STOP
    record = run(MessagesDialect(), "/v1/messages", body, MSG_REQUEST, True)
    assert record.metered
    assert record.usage == Usage(input_tokens=30, cached_input_tokens=5, output_tokens=20)


# --- chat: Nov 2024 cumulative usage on every chunk is provisional until [DONE] -----------


def chat_chunk(text: str | None, completion: int, finish: str | None = None) -> bytes:
    choice: dict[str, object] = {"index": 0, "delta": {}, "finish_reason": finish}
    if text is not None:
        choice["delta"] = {"content": text}
    return event(
        {
            "id": "c1",
            "model": "grok-beta",
            "choices": [choice],
            "usage": {
                "prompt_tokens": 21,
                "completion_tokens": completion,
                "total_tokens": 21 + completion,
            },
        }
    )


CHAT_BODY = chat_chunk("One", 1) + chat_chunk(" two", 2) + chat_chunk(None, 3, "stop")
CHAT_REQUEST = b'{"model":"grok-beta","stream":true,"stream_options":{"include_usage":true}}'


@pytest.mark.parametrize("complete", [True, False])
def test_chat_cumulative_usage_before_done_is_incomplete(complete: bool) -> None:
    record = run(ChatDialect(), "/v1/chat/completions", CHAT_BODY, CHAT_REQUEST, complete)
    assert record.usage is None and record.unmetered_reason is Unmetered.INCOMPLETE


def test_chat_cumulative_usage_with_done_is_metered_exactly() -> None:
    body = CHAT_BODY + b"data: [DONE]\n\n"
    record = run(ChatDialect(), "/v1/chat/completions", body, CHAT_REQUEST, True)
    assert record.metered and record.usage == Usage(input_tokens=21, output_tokens=3)


def test_chat_usage_chunk_is_final_even_without_done() -> None:
    usage_chunk = event(
        {
            "id": "c1",
            "model": "grok-beta",
            "choices": [],
            "usage": {"prompt_tokens": 21, "completion_tokens": 3, "total_tokens": 24},
        }
    )
    record = run(
        ChatDialect(), "/v1/chat/completions", CHAT_BODY + usage_chunk, CHAT_REQUEST, False
    )
    assert record.metered and record.usage == Usage(input_tokens=21, output_tokens=3)


@pytest.mark.parametrize("one_read", [True, False])
def test_chat_done_before_any_usage_closes_nothing(one_read: bool) -> None:
    """``[DONE]`` makes final the usage read before it. One that comes before any (a stream
    that goes on after saying it is done) closes nothing: the cumulative usage after it is
    provisional, unmetered ``incomplete``; with another ``[DONE]`` after it, metered. The same
    whether the stream comes in one read (the quiet path looks for ``[DONE]`` only after a
    usage or error needle) or event by event."""
    first = chat_chunk("One", 1).replace(b'"usage"', b'"x"')  # no usage on it
    for tail, metered in ((b"", False), (b"data: [DONE]\n\n", True)):
        body = first + b"data: [DONE]\n\n" + chat_chunk(" two", 2) + tail
        record = make_record(endpoint="chat.completions", stream=True)
        ChatDialect().inspect_request(record, CHAT_REQUEST)
        tap = ChatDialect().tap(record, "text/event-stream", lambda: 1.0)
        for piece in [body] if one_read else split_events(body):
            tap.feed(piece)
        tap.finish(True)
        if metered:
            assert record.metered and record.usage == Usage(input_tokens=21, output_tokens=2)
        else:
            assert record.usage is None and record.unmetered_reason is Unmetered.INCOMPLETE


# --- Responses: usage only on the terminal event -----------------------------------------


def response_event(kind: str, usage: dict[str, int] | None) -> bytes:
    return event(
        {
            "type": kind,
            "response": {
                "id": "4c1d2e3f-0a9b-4c8d-9e7f-6a5b4c3d2e1f",
                "model": "grok-4.3",
                "status": "in_progress",
                "usage": usage,
            },
        },
        kind,
    )


ZERO = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
RESP_REQUEST = b'{"model":"grok-4.3","stream":true,"input":"hi"}'


@pytest.mark.parametrize("complete", [True, False])
def test_responses_usage_before_the_terminal_event_is_incomplete(complete: bool) -> None:
    body = response_event("response.created", ZERO) + response_event("response.in_progress", ZERO)
    record = run(ResponsesDialect(), "/v1/responses", body, RESP_REQUEST, complete)
    assert record.usage is None and record.unmetered_reason is Unmetered.INCOMPLETE


def test_responses_terminal_usage_is_metered_exactly() -> None:
    final = {"input_tokens": 44, "output_tokens": 13, "total_tokens": 57}
    body = response_event("response.created", ZERO) + response_event("response.completed", final)
    record = run(ResponsesDialect(), "/v1/responses", body, RESP_REQUEST, True)
    assert record.metered and record.usage == Usage(input_tokens=44, output_tokens=13)


# --- legacy completions: as chat ----------------------------------------------------------


def text_chunk(text: str, completion: int, finish: str | None = None) -> bytes:
    return event(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "model": "grok-3",
            "choices": [{"text": text, "index": 0, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": 12,
                "completion_tokens": completion,
                "total_tokens": 12 + completion,
            },
        }
    )


TEXT_BODY = text_chunk("Once", 1) + text_chunk(" upon", 2, "length")
TEXT_REQUEST = b'{"model":"grok-3","prompt":"Tell","stream":true}'


@pytest.mark.parametrize("complete", [True, False])
def test_completions_cumulative_usage_before_done_is_incomplete(complete: bool) -> None:
    record = run(CompletionsDialect(), "/v1/completions", TEXT_BODY, TEXT_REQUEST, complete)
    assert record.usage is None and record.unmetered_reason is Unmetered.INCOMPLETE


def test_completions_with_done_is_metered_exactly() -> None:
    body = TEXT_BODY + b"data: [DONE]\n\n"
    record = run(CompletionsDialect(), "/v1/completions", body, TEXT_REQUEST, True)
    assert record.metered and record.usage == Usage(input_tokens=12, output_tokens=2)
    assert record.ttft_ms == 1000.0  # the first text chunk, at the test clock


# --- Anthropic legacy /v1/complete: final on the event with the stop_reason ---------------


def complete_event(text: str, stop: str | None, output: int) -> bytes:
    return event(
        {
            "type": "completion",
            "id": "compl_1",
            "completion": text,
            "stop_reason": stop,
            "model": "grok-3",
            "usage": {"input_tokens": 18, "output_tokens": output},
        },
        "completion",
    )


COMPLETE_REQUEST = b'{"model":"grok-3","prompt":"Human: hi","stream":true}'


@pytest.mark.parametrize("complete", [True, False])
def test_complete_usage_before_the_stop_reason_is_incomplete(complete: bool) -> None:
    body = complete_event("Hel", None, 1) + complete_event("lo", None, 2)
    record = run(CompleteDialect(), "/v1/complete", body, COMPLETE_REQUEST, complete)
    assert record.usage is None and record.unmetered_reason is Unmetered.INCOMPLETE


def test_complete_final_event_is_metered_exactly() -> None:
    body = complete_event("Hel", None, 1) + complete_event("lo", "stop_sequence", 2)
    record = run(CompleteDialect(), "/v1/complete", body, COMPLETE_REQUEST, True)
    assert record.metered and record.usage == Usage(input_tokens=18, output_tokens=2)
