"""The SSE tap alone, in-process: what metering one streamed chat completion costs the tap.

No sockets and no event loop: each call makes a record and the chat dialect's stream tap, feeds
it a 100-event body (`bench/upstream.py`'s events) and finishes it, as the relay does. Scenarios:

* ``filter`` / ``plain``: the tap strips the usage chunk (the client did not ask for usage, so
  the relay injected ``stream_options.include_usage``: what most apps get) / it only reads;
* ``null``: ``"usage":null`` on every content chunk, then the usage chunk (OpenAI's streams
  with ``include_usage``);
* ``every``: a Nov 2024-style stream, cumulative usage on every chunk and no usage chunk
  (xai-api.md: "keep the last, never sum");
* fed in one chunk (a burst: every event in one read), in 3 (cut at arbitrary bytes), or an
  event a read (``-each``: a paced stream, as a model that streams slower than the network).

    python bench/tap_bench.py                       # µs per call, best of 5 timeit repeats
    python bench/tap_bench.py --callgrind           # instructions per call under callgrind
    python bench/tap_bench.py --src DIR ...         # DIR's daemon/ (e.g. an exported revision)

Instruction counts (valgrind's callgrind) do not move with other load on the machine, so a
before/after comparison holds on a busy machine, where wall-clock timings do not: each figure is
(instructions of a run of N calls - those of a run of 0 calls) / N, the same setup in both.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import upstream  # noqa: E402  (beside this script)

CHUNKS = 100
EACH = 0  # parts: an event a read
SCENARIOS = {
    f"{kind}-{'each' if parts == EACH else parts}": (kind, parts)
    for kind in ("filter", "plain", "null-filter", "null-plain", "every-filter", "every-plain")
    for parts in (1, 3, EACH)
}


def body(kind: str) -> bytes:
    """The upstream's SSE body for a scenario: 100 content events, then (``filter``,
    ``plain``) the ``choices: []`` usage chunk, or (``every-*``) cumulative usage on every
    chunk and no usage chunk; then ``data: [DONE]``."""
    shape = upstream.Shape(
        stream=True,
        include_usage=not kind.startswith("every"),
        chunks=CHUNKS,
        usage_null=kind.startswith("null"),
        model=upstream.MODEL,
    )
    events = upstream.stream_events(shape)
    if not kind.startswith("every"):
        return b"".join(events)
    out = []
    for i, event in enumerate(events[:-1]):
        chunk = orjson.loads(event[6:])
        usage = dict(upstream.USAGE)
        usage["completion_tokens"] = 1 + i * 2 // CHUNKS  # cumulative: grows to the final 2
        chunk["usage"] = usage
        out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    return b"".join([*out, events[-1]])


def make_call(name: str) -> tuple[Callable[[], object], bytes]:
    """A function metering one call of scenario `name`, and what the client must get."""
    from daemon.dialects.chat import ChatDialect
    from daemon.dialects.sse import split_events
    from daemon.record import CallRecord

    kind, parts = SCENARIOS[name]
    data = body(kind)
    filtering = kind.endswith("filter")
    if parts == EACH:
        cuts = [0, *itertools.accumulate(len(event) for event in split_events(data))]
    else:
        cuts = [0, *(len(data) * i // parts + 7 for i in range(1, parts)), len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(cuts)]
    dialect = ChatDialect()
    request = b'{"model":"grok-4-fast","messages":[],"stream":true}'

    def call() -> bytes:
        record = CallRecord(
            id="t",
            started_at=0.0,
            t0=0.0,
            provider="xai",
            endpoint="chat.completions",
            method="POST",
            path="/v1/chat/completions",
            status=200,
        )
        dialect.inspect_request(record, request)
        record.usage_injected = filtering
        tap = dialect.tap(record, "text/event-stream", lambda: 1.0)
        out = []
        for piece in pieces:
            got = tap.feed(piece)
            out.append(piece if got is None else got)
        out.append(tap.finish(True) or b"")
        if record.usage is None or record.usage.output_tokens != 127:
            raise AssertionError(f"{name}: not metered: {record.unmetered_reason}")
        return b"".join(out)

    expected = data
    if filtering and not kind.startswith("every"):
        usage_event = data[: data.rindex(b"data: [DONE]")]
        usage_event = usage_event[usage_event.rindex(b"data: ") :]
        expected = data.replace(usage_event, b"")
    if call() != expected:
        raise AssertionError(f"{name}: the client would not get the expected bytes")
    return call, expected


def run_calls(name: str, calls: int) -> None:
    call, _ = make_call(name)  # the same setup whatever `calls` is
    for _ in range(calls):
        call()


def callgrind(names: list[str], calls: int, src: str) -> dict[str, float]:
    """Instructions per call of each scenario: (run of `calls` - run of 0) / `calls`."""
    env = {**os.environ, "PYTHONPATH": src, "PYTHONHASHSEED": "0"}
    totals: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="tap-bench-") as tmp:
        for name, n in [(names[0], 0), *((name, calls) for name in names)]:
            out = Path(tmp) / "callgrind.out"
            subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}",
                    sys.executable,
                    __file__,
                    "--run",
                    name,
                    "--calls",
                    str(n),
                ],
                env=env,
                check=True,
                capture_output=True,
            )
            text = out.read_text()
            found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
            if found is None:
                raise RuntimeError("callgrind wrote no totals")
            totals[f"{name}/{n}"] = int(found.group(1))
            out.unlink()
    base = totals[f"{names[0]}/0"]
    return {name: (totals[f"{name}/{calls}"] - base) / calls for name in names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--src", default=str(HERE.parent), help="directory whose daemon/ runs")
    parser.add_argument("--only", action="append", choices=list(SCENARIOS), help="scenario")
    parser.add_argument("--callgrind", action="store_true", help="count instructions instead")
    parser.add_argument("--calls", type=int, default=200, help="calls per measure")
    parser.add_argument("--run", choices=list(SCENARIOS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:  # one measured run (under callgrind)
        run_calls(args.run, args.calls)
        return 0
    names = args.only or list(SCENARIOS)
    if args.callgrind:
        for name, instructions in callgrind(names, args.calls, args.src).items():
            print(f"{name:16} {instructions / 1000:8.1f} k instructions/call", flush=True)
        return 0
    sys.path.insert(0, args.src)
    for name in names:
        call, _ = make_call(name)
        best = min(timeit.repeat(call, number=args.calls, repeat=5)) / args.calls
        print(f"{name:16} {best * 1e6:8.1f} µs/call", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
