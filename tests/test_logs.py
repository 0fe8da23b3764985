"""The JSON log: one line per call, coalesced into few writes, never a key."""

from __future__ import annotations

import asyncio
import io
import json

from daemon import logs
from daemon.logs import CallLog, CoalescingWriter
from daemon.record import Usage
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
