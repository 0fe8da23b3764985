"""The benchmark's gRPC scenario: the daemon's gRPC listener beside a bare grpc.aio pass-through.

What xai-sdk does, without the SDK in the way: ``/xai_api.Chat/GetCompletion`` (unary) and
``/xai_api.Chat/GetCompletionChunk`` (a 100-chunk server stream, usage on the last message),
sent as bytes over one grpc.aio channel per target, with the SDK's metadata. Targets: the fake
upstream itself (`grpc_upstream.py`, "direct"), the floor (`grpc_passthrough.py`, relaying
without metering) and each daemon's gRPC listener; each relay pinned to the relay core, as in
the HTTP scenario, and measured by the same CPU clock (`run.measure_cpu`). Every answer a relay
returns is compared byte for byte with the direct one.

Figures, under ``grpc_*`` keys of each target's results (see `COLUMNS`): added p50/p99 of a
unary call at c=1, unary calls/s and relay CPU µs per call at the run's concurrency, added p50
of a whole unpaced stream and relay CPU ms per stream at c=1.

`run.py` drives it; this module only needs what it is handed (`Hooks`), so it imports nothing
from there.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from xai_sdk.proto import chat_pb2

UNARY = "/xai_api.Chat/GetCompletion"
STREAM = "/xai_api.Chat/GetCompletionChunk"
CHUNKS = 100
REQUEST = chat_pb2.GetCompletionsRequest(
    model="grok-4-fast",
    messages=[
        chat_pb2.Message(
            role=chat_pb2.ROLE_SYSTEM, content=[chat_pb2.Content(text="You are a terse assistant.")]
        ),
        chat_pb2.Message(
            role=chat_pb2.ROLE_USER, content=[chat_pb2.Content(text="Say hi in one word.")]
        ),
    ],
    max_tokens=16,
).SerializeToString()
# What xai-sdk sends with every call (its interceptor's metadata), and the stream's length.
METADATA = (
    ("authorization", "Bearer xai-bench-0000000000000000000000000000000000000000"),
    ("xai-sdk-version", "python/1.21.0"),
    ("xai-sdk-language", "python/3.11"),
    ("x-bench-chunks", str(CHUNKS)),
)

COLUMNS: list[tuple[str, str, str]] = [
    # (header, result key, how it is compared with direct: "added" or "value"), as run.COLUMNS
    ("added p50 ms", "grpc_p50_ms", "added"),
    ("added p99 ms", "grpc_p99_ms", "added"),
    ("calls/s", "grpc_calls_per_s", "value"),
    ("CPU µs/call", "grpc_cpu_us_per_call", "value"),
    ("added stream p50 ms", "grpc_stream_p50_ms", "added"),
    ("CPU ms/100-chunk stream", "grpc_cpu_ms_per_stream", "value"),
]


@dataclass(frozen=True)
class Plan:
    """How much of the gRPC scenario to run."""

    warmup: int  # unary calls per target (half at c=1, half at `concurrency`), and 5 streams
    latency_calls: int  # c=1 unary calls per target, in rounds across targets
    latency_rounds: int
    calls: int  # unary calls per target at `concurrency`: CPU per call
    concurrency: int
    streams: int  # c=1 unpaced 100-chunk streams per target: CPU per stream


QUICK = Plan(
    warmup=100, latency_calls=300, latency_rounds=3, calls=2000, concurrency=32, streams=40
)
FULL = Plan(
    warmup=500, latency_calls=3000, latency_rounds=6, calls=20000, concurrency=32, streams=300
)


@dataclass
class Checks:
    """Answers compared byte for byte with the direct ones."""

    compared: int = 0
    mismatched: int = 0
    failed: int = 0
    first_problem: str | None = None

    def note(self, problem: str) -> None:
        if self.first_problem is None:
            self.first_problem = problem[:300]

    @property
    def ok(self) -> bool:
        return self.compared > 0 and not (self.mismatched or self.failed)


@dataclass
class Reference:
    """The direct answers: a relay must return exactly these bytes."""

    unary: bytes
    stream: list[bytes]


@dataclass
class Hooks:
    """What run.py lends the scenario: its CPU measure, its wait for the ledger, percentiles."""

    measure_cpu: Callable[[Any, Callable[[], Awaitable[None]]], Awaitable[Any]]  # -> run.Cost
    settle: Callable[[Any], Awaitable[float]]
    percentile: Callable[[list[float], float], float]
    run_concurrently: Callable[[int, int, Callable[[], Awaitable[object]]], Awaitable[None]]


@dataclass
class Client:
    """One target's channel: `target` is run.Target (pid, results, sent), `address` host:port."""

    target: Any
    address: str
    channel: grpc.aio.Channel | None = None
    checks: Checks = field(default_factory=Checks)

    def open(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.address)
        self._unary = self.channel.unary_unary(UNARY)
        self._stream = self.channel.unary_stream(STREAM)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def unary(self, expected: bytes | None) -> float:
        """One GetCompletion; seconds it took."""
        self.target.sent += 1
        t0 = time.perf_counter()
        try:
            answer = await self._unary(REQUEST, metadata=METADATA, timeout=60)
        except grpc.aio.AioRpcError as exc:
            self.checks.failed += 1
            self.checks.note(f"unary: {exc.code().name} {exc.details()}")
            return time.perf_counter() - t0
        elapsed = time.perf_counter() - t0
        if expected is not None:
            self._compare([answer], [expected])
        return elapsed

    async def stream(self, expected: list[bytes] | None) -> tuple[float, list[bytes]]:
        """One GetCompletionChunk read to its end: (seconds, messages)."""
        self.target.sent += 1
        t0 = time.perf_counter()
        messages: list[bytes] = []
        try:
            async for message in self._stream(REQUEST, metadata=METADATA, timeout=60):
                messages.append(message)
        except grpc.aio.AioRpcError as exc:
            self.checks.failed += 1
            self.checks.note(f"stream: {exc.code().name} {exc.details()}")
        elapsed = time.perf_counter() - t0
        if expected is not None:
            self._compare(messages, expected)
        return elapsed, messages

    def _compare(self, got: list[bytes], expected: list[bytes]) -> None:
        self.checks.compared += 1
        if got != expected:
            self.checks.mismatched += 1
            self.checks.note(
                f"answer differs: {len(got)} messages, {sum(map(len, got))} bytes; expected "
                f"{len(expected)}, {sum(map(len, expected))}"
            )


async def reference(direct: Client) -> Reference:
    """The direct answers, checked to be what the scenario expects (usage on the last chunk)."""
    assert direct.channel is not None
    unary_answer = await direct.channel.unary_unary(UNARY)(REQUEST, metadata=METADATA, timeout=60)
    stream = [
        message
        async for message in direct.channel.unary_stream(STREAM)(
            REQUEST, metadata=METADATA, timeout=60
        )
    ]
    last = chat_pb2.GetChatCompletionChunk.FromString(stream[-1]) if stream else None
    answer = chat_pb2.GetChatCompletionResponse.FromString(unary_answer)
    if len(stream) != CHUNKS + 1 or last is None or not last.HasField("usage"):
        raise RuntimeError("the bench gRPC upstream's stream is not what the benchmark expects")
    if not answer.HasField("usage"):
        raise RuntimeError("the bench gRPC upstream's answer has no usage")
    return Reference(unary=bytes(unary_answer), stream=stream)


async def measure(clients: list[Client], plan: Plan, hooks: Hooks) -> None:
    """Every phase on every client (clients[0] is direct); figures into target.results."""
    ref = await reference(clients[0])
    for client in clients:  # warm-up: connections, handler caches, the daemon's first prices

        async def one(client: Client = client) -> object:
            return await client.unary(ref.unary)

        for _ in range(plan.warmup // 2):
            await one()
        await hooks.run_concurrently(plan.concurrency, plan.warmup - plan.warmup // 2, one)
        for _ in range(5):
            await client.stream(ref.stream)
        await hooks.settle(client.target)

    samples: dict[int, list[float]] = {id(c): [] for c in clients}
    per_round = max(plan.latency_calls // plan.latency_rounds, 1)
    for _ in range(plan.latency_rounds):  # targets take turns, so drift hits them all alike
        for client in clients:
            for _ in range(per_round):
                samples[id(client)].append(await client.unary(ref.unary) * 1000.0)
            await hooks.settle(client.target)
    for client in clients:
        s = samples[id(client)]
        client.target.results.update(
            grpc_p50_ms=hooks.percentile(s, 50), grpc_p99_ms=hooks.percentile(s, 99)
        )

    for client in clients:

        async def calls(client: Client = client) -> None:
            await hooks.run_concurrently(
                plan.concurrency, plan.calls, lambda: client.unary(ref.unary)
            )

        totals: list[float] = []

        async def streams(client: Client = client, totals: list[float] = totals) -> None:
            for _ in range(plan.streams):
                elapsed, _ = await client.stream(ref.stream)
                totals.append(elapsed * 1000.0)

        results = client.target.results
        if client.target.pid is None:
            t0 = time.perf_counter()
            await calls()
            results["grpc_calls_per_s"] = plan.calls / (time.perf_counter() - t0)
            await streams()
        else:
            cost = await hooks.measure_cpu(client.target, calls)
            results["grpc_calls_per_s"] = plan.calls / cost.wall
            results["grpc_cpu_us_per_call"] = cost.cpu / plan.calls * 1e6
            cost = await hooks.measure_cpu(client.target, streams)
            results["grpc_cpu_ms_per_stream"] = cost.cpu / plan.streams * 1000.0
        results["grpc_stream_p50_ms"] = hooks.percentile(totals, 50)
        results["grpc_checks"] = {
            "compared": client.checks.compared,
            "mismatched": client.checks.mismatched,
            "failed": client.checks.failed,
            "first_problem": client.checks.first_problem,
        }
