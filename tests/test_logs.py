"""The JSON log: one line per call, coalesced into few writes, never a key."""

from __future__ import annotations

import asyncio
import io
import json
import re

import structlog

from daemon import logs
from daemon.logs import CallLog, CoalescingWriter
from daemon.record import CallError, CallRecord, CostSource, Unmetered, Usage
from daemon.testing import make_record


class Stream(io.BytesIO):
    writes = 0
    written: asyncio.Event | None = None

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        if self.written is not None:
            self.written.set()
        return super().write(data)


async def test_lines_in_one_window_share_one_write() -> None:
    raw = Stream()
    raw.written = asyncio.Event()
    writer = CoalescingWriter(raw, window=0.01)
    for i in range(5):
        writer.write(b'{"n":%d}\n' % i)
        writer.flush()
    assert raw.writes == 0
    async with asyncio.timeout(5):
        await raw.written.wait()  # the window's timer wrote them
    assert raw.writes == 1 and raw.getvalue().count(b"\n") == 5


def test_outside_a_loop_lines_are_written_at_once() -> None:
    raw = Stream()
    CoalescingWriter(raw).write(b"x\n")
    assert raw.getvalue() == b"x\n"


def test_call_line_is_json_with_no_key() -> None:
    out = io.TextIOWrapper(Stream(), write_through=True)
    logs.configure("info", "json", stream=out)
    try:
        record = make_record(
            id="c1",
            model="grok-3",
            key_id="k_abc",
            usage=Usage(input_tokens=3, output_tokens=4),
            duration_ms=1.5,
        )
        CallLog()(record)
        logs.flush()
        text = out.buffer.getvalue().decode()  # type: ignore[attr-defined]
        line = json.loads(text.splitlines()[-1])
        assert line["event"] == "call" and line["input_tokens"] == 3
        assert line["level"] == "info" and line["timestamp"].endswith("Z")
        assert line["key_id"] == "k_abc" and "Authorization" not in json.dumps(line)
    finally:
        logs.reset()


# --- the console: one compact, aligned line per call -----------------------------------------

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")  # ISO, UTC, milliseconds


def console_lines(*records: CallRecord, level: str = "info", tty: bool = False) -> list[str]:
    """What the console renderer writes for `records` (after one other event), each line's
    time stamp checked and cut off."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return tty

    out = Terminal()
    logs.configure(level, "console", stream=out)
    try:
        structlog.get_logger().info("listening", relay="http://127.0.0.1:8787/v1", grpc=None)
        for record in records:
            CallLog()(record)
    finally:
        logs.reset()
    lines = out.getvalue().splitlines()
    if tty:
        return lines
    assert all(STAMP.match(line) for line in lines), lines
    return [line[25:] for line in lines]


def test_a_call_is_one_compact_aligned_line_on_the_console() -> None:
    metered = make_record(
        id="c1",
        model="grok-4.3",
        key_id="k_abc",
        usage=Usage(input_tokens=1234, cached_input_tokens=1000, output_tokens=567),
        cost_ticks=12_345_678,  # $0.0012345678
        cost_source=CostSource.COMPUTED,
        duration_ms=312.44,
        ttft_ms=80.0,
        app="checkout",
    )
    failed = make_record(
        id="c2",
        requested_model="grok-4-fast-reasoning",
        endpoint="responses",
        status=504,
        error=CallError.UPSTREAM_TIMEOUT,
        unmetered_reason=Unmetered.NO_RESPONSE,
        duration_ms=5000.4,
    )
    assert console_lines(metered, failed) == [
        "[info     ] listening                      relay=http://127.0.0.1:8787/v1",
        "[info     ] grok-4.3                     1,234 in     1,000 cached      567 out "
        "  $0.001235      312 ms 200 chat.completions app=checkout",
        "[warning  ] grok-4-fast-reasoning            - in         - cached        - out "
        "          -    5,000 ms 504 responses error=upstream_timeout unmetered=no_response",
    ]


def test_only_a_call_with_usage_and_no_price_reads_unpriced() -> None:
    usage = Usage(input_tokens=10, output_tokens=5)
    unpriced = make_record(model="grok-9", usage=usage, cost_source=CostSource.UNPRICED)
    gone = make_record(model="grok-3", status=503, error=CallError.UPSTREAM_UNREACHABLE)
    missing = make_record(model="grok-3", status=404, error=CallError.HTTP_ERROR)
    no_usage = make_record(model="grok-3", unmetered_reason=Unmetered.NO_USAGE)
    lines = console_lines(unpriced, gone, missing, no_usage)[1:]
    costs = [line[12:].split(" in ")[1].split(" out ")[1].split()[0] for line in lines]
    assert costs == ["unpriced", "-", "-", "-"]  # was "unpriced" on every one


def test_a_long_model_name_is_cut_to_its_column() -> None:
    long = make_record(
        model="a-very-long-model-name-that-nobody-has-priced-yet-0123456789", duration_ms=2.0
    )
    short = make_record(model="grok-3", duration_ms=2.0)
    cut, plain = console_lines(long, short)[1:]
    assert cut.startswith("[info     ] a-very-long-model-name-… ")
    assert plain.startswith("[info     ] grok-3                   ")
    assert cut.index(" in ") == plain.index(" in ")  # the columns stay aligned
    assert len(cut) == len(plain)


def test_the_console_colours_the_level_only_on_a_terminal() -> None:
    line = console_lines(make_record(duration_ms=1.0), tty=True)[1]
    assert re.fullmatch(
        r"\x1b\[2m\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\x1b\[0m \[\x1b\[32minfo     \x1b\[0m\] - +"
        r"- in +- cached +- out +- +1 ms 200 chat\.completions",
        line,
    ), line
    assert "\x1b[" not in "".join(console_lines(make_record(duration_ms=1.0)))


def test_a_5xx_call_is_a_warning_a_4xx_an_info() -> None:
    out = io.TextIOWrapper(Stream(), write_through=True)
    logs.configure("info", "json", stream=out)
    try:
        for status in (200, 404, 429, 500, 502, 503, None):
            CallLog()(make_record(id=f"s{status}", status=status))
        logs.flush()
        text = out.buffer.getvalue().decode()  # type: ignore[attr-defined]
    finally:
        logs.reset()
    levels = {line["id"]: line["level"] for line in map(json.loads, text.splitlines())}
    assert levels == {
        "s200": "info",
        "s404": "info",
        "s429": "info",
        "s500": "warning",
        "s502": "warning",
        "s503": "warning",
        "sNone": "info",  # no status: a client gone before the answer
    }
    # at log.level = "warning", only the 5xx calls have a line
    lines = console_lines(*(make_record(status=s) for s in (200, 404, 502)), level="warning")
    assert [line.split()[:1] + line.split()[-2:] for line in lines] == [
        ["[warning", "502", "chat.completions"]
    ]
