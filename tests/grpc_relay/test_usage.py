"""SamplingUsage as the normalized Usage: REST chat's conventions, checked field by field, and
the method table's readers on hand-built messages."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from xai_sdk.proto import chat_pb2, deferred_pb2, image_pb2, usage_pb2

from daemon.dialects.chat import chat_usage
from daemon.grpc_relay.methods import METHODS, OTHER, method
from daemon.grpc_relay.usage import HTTP_STATUS, sampling_usage, service_tier
from daemon.record import Usage
from daemon.testing import XAI_CHAT_USAGE, make_record


def usage(**fields: Any) -> Any:
    return usage_pb2.SamplingUsage(**fields)


def test_the_real_xai_bill_reads_as_on_rest() -> None:
    # xai-api.md's real chat usage (165 + 2 + 125 = 292), sent as gRPC would send it
    grpc_usage = usage(
        prompt_tokens=165,
        completion_tokens=2,
        reasoning_tokens=125,
        total_tokens=292,
        prompt_text_tokens=165,
        cached_prompt_text_tokens=156,
        cost_in_usd_ticks=731000,
    )
    assert (
        sampling_usage(grpc_usage)
        == chat_usage(XAI_CHAT_USAGE)
        == Usage(
            input_tokens=165,
            cached_input_tokens=156,
            output_tokens=127,
            reasoning_tokens=125,
            reported_cost_ticks=731000,
        )
    )


@pytest.mark.parametrize(
    ("completion", "reasoning", "total", "output"),
    [
        (9, 75, 99, 84),  # total = prompt + completion + reasoning: outside, added
        (100, 40, 115, 100),  # total = prompt + completion: inside already (OpenAI's way)
        (5, 40, 0, 45),  # no total, reasoning > completion: it cannot be inside
        (50, 40, 0, 50),  # no total, could be inside: REST's rule keeps it inside
    ],
)
def test_reasoning_follows_rest_chats_rule(
    completion: int, reasoning: int, total: int, output: int
) -> None:
    got = sampling_usage(
        usage(
            prompt_tokens=15,
            completion_tokens=completion,
            reasoning_tokens=reasoning,
            total_tokens=total,
        )
    )
    assert (got.output_tokens, got.reasoning_tokens) == (output, reasoning)


def test_cached_and_image_tokens_and_sources() -> None:
    got = sampling_usage(
        usage(
            prompt_tokens=100,
            cached_prompt_text_tokens=400,  # never more than the prompt
            prompt_image_tokens=30,
            completion_tokens=7,
            num_sources_used=3,
        )
    )
    assert (got.input_tokens, got.cached_input_tokens, got.image_input_tokens, got.sources) == (
        100,
        100,
        30,
        3,
    )


def test_tools_count_one_per_entry_under_rests_names() -> None:
    tools = [1, 1, 2, 3, 6, 8, 10, 11, 99, 0]  # 99: a tool newer than this table; 0: invalid
    got = sampling_usage(usage(prompt_tokens=1, server_side_tools_used=tools))
    assert got.server_tool_calls == {
        "web_search": 2,
        "x_search": 1,
        "code_interpreter": 1,
        "file_search": 1,
        "document_search": 1,
        "image_search": 1,
        "image_generation": 1,
        "unknown": 1,
    }
    assert got.tool_call_count() == 9


def test_reported_ticks_only_when_set() -> None:
    assert sampling_usage(usage(prompt_tokens=1)).reported_cost_ticks is None
    assert sampling_usage(usage(prompt_tokens=1, cost_in_usd_ticks=0)).reported_cost_ticks == 0


def test_every_grpc_code_has_an_http_status_and_tiers_read_as_rest() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    assert HTTP_STATUS[grpc.StatusCode.OK] == 200
    assert [service_tier(n) for n in (0, 1, 2, 7)] == [None, "default", "priority", None]


def test_the_method_table() -> None:
    billed = {name for name, m in METHODS.items() if m.billable}
    assert billed == {
        "/xai_api.Chat/GetCompletion",
        "/xai_api.Chat/GetCompletionChunk",
        "/xai_api.Chat/CompactContext",
        "/xai_api.Sample/SampleText",
        "/xai_api.Sample/SampleTextStreaming",
        "/xai_api.Image/GenerateImage",
    }  # and the deferred results, once they say DONE
    assert method("/xai_api.Chat/GetStoredCompletion").billable is False
    assert method("/xai_api.Brand/New") is OTHER
    assert method("/xai_api.Files/UploadFile").endpoint == "files"
    assert method("/xai_api.BatchMgmt/ListBatchResults").endpoint == "batches"


def test_a_deferred_poll_bills_only_at_done() -> None:
    read = METHODS["/xai_api.Chat/GetDeferredCompletion"].read_last
    assert read is not None
    pending = make_record(endpoint="chat.deferred", billable=False)
    read(
        pending,
        chat_pb2.GetDeferredCompletionResponse(status=deferred_pb2.PENDING).SerializeToString(),
    )
    assert (pending.billable, pending.usage) == (False, None)
    done = make_record(endpoint="chat.deferred", billable=False)
    answer = chat_pb2.GetChatCompletionResponse(id="c", model="grok-4.3", service_tier=2)
    answer.usage.prompt_tokens = 4
    read(
        done,
        chat_pb2.GetDeferredCompletionResponse(
            status=deferred_pb2.DONE, response=answer
        ).SerializeToString(),
    )
    assert (done.billable, done.model, done.service_tier) == (True, "grok-4.3", "priority")
    assert done.usage is not None and done.usage.input_tokens == 4


def test_an_image_request_names_its_price_tier() -> None:
    record = make_record(endpoint="images.generations")
    read = METHODS["/xai_api.Image/GenerateImage"].read_request
    assert read is not None
    request = image_pb2.GenerateImageRequest(
        prompt="p", model="grok-imagine-image-2.0", quality=image_pb2.IMG_QUALITY_MEDIUM
    )
    read(record, request.SerializeToString())
    assert (record.requested_model, record.image_tier) == (
        "grok-imagine-image-2.0",
        ("medium", None),
    )
