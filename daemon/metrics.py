"""Every Prometheus metric the daemon exports, declared in one place, on a registry passed in.

`Metrics.observe(record)` is the metrics sink. It runs once per call, so label children are
cached per label tuple: a `labels()` lookup per metric per call would cost as much as the relay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from daemon import __version__
from daemon.record import CallRecord

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
# OpenTelemetry GenAI semantic conventions' advised buckets.
GENAI_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                          20.48, 40.96, 81.92)
GENAI_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                       16777216, 67108864)
TOKEN_TYPES = ("input", "cached_input", "output", "reasoning", "image_input")
GENAI_PROVIDER = {"xai": "x_ai", "openai": "openai", "anthropic": "anthropic"}
GENAI_OPERATION = {"chat.completions": "chat", "responses": "chat", "messages": "chat",
                   "images.generations": "generate_content", "images.edits": "generate_content"}


class ModelLabels:
    """Bounds the `model` label: known models, then the first `cap` others seen, then "other"."""

    def __init__(self, cap: int, known: Iterable[str] = ()) -> None:
        self._cap = cap
        self._known: set[str] = set(known)
        self._seen: set[str] = set()

    def add_known(self, models: Iterable[str]) -> None:
        self._known.update(models)

    def __call__(self, model: str | None) -> str:
        if not model:
            return "none"
        if model in self._known or model in self._seen:
            return model
        if len(self._seen) < self._cap:
            self._seen.add(model)
            return model
        return "other"


class Metrics:
    def __init__(self, registry: CollectorRegistry, max_models: int = 50) -> None:
        self.registry = registry
        self.model_label = ModelLabels(max_models)
        r = registry
        self.requests = Counter(
            "xai_meter_requests", "Relayed calls, by the HTTP status the client got "
            "(code \"none\" when it got none).",
            ["provider", "endpoint", "model", "code"], registry=r)
        self.tokens = Counter(
            "xai_meter_tokens", "Tokens by type: input (incl. cached), cached_input, output "
            "(incl. reasoning), reasoning, image_input.",
            ["provider", "model", "type"], registry=r)
        self.duration = Histogram(
            "xai_meter_request_duration_seconds", "Whole call, request start to last byte.",
            ["provider", "model"], buckets=DURATION_BUCKETS, registry=r)
        self.ttft = Histogram(
            "xai_meter_time_to_first_token_seconds", "Streams: request start to the first "
            "generated token.", ["provider", "model"], buckets=TTFT_BUCKETS, registry=r)
        self.unmetered = Counter(
            "xai_meter_unmetered", "Billable calls whose usage could not be read, by reason.",
            ["endpoint", "reason"], registry=r)
        self.errors = Counter(
            "xai_meter_call_errors", "Calls that did not end normally, by error kind.",
            ["provider", "endpoint", "error"], registry=r)
        self.in_flight = Gauge(
            "xai_meter_in_flight_requests", "Calls being relayed now.", registry=r)
        self.ledger_queue = Gauge(
            "xai_meter_ledger_queue_depth", "Ledger rows waiting to be written.", registry=r)
        self.ledger_rows = Counter(
            "xai_meter_ledger_rows_written", "Rows written to the ledger.", registry=r)
        self.ledger_errors = Counter(
            "xai_meter_ledger_write_errors", "Failed ledger write attempts.", registry=r)
        self.sink_errors = Counter(
            "xai_meter_sink_errors", "Exceptions raised by a sink (metering code) while "
            "handling a finished call; the relay is unaffected.", ["sink"], registry=r)
        self.build = Info("xai_meter_build", "Version of the running daemon.", registry=r)
        self.build.info({"version": __version__})
        self.genai_duration = Histogram(
            "gen_ai_client_operation_duration", "GenAI operation duration (OpenTelemetry "
            "semantic conventions).", ["gen_ai_provider_name", "gen_ai_operation_name",
                                        "gen_ai_response_model", "error_type"],
            unit="seconds", buckets=GENAI_DURATION_BUCKETS, registry=r)
        self.genai_tokens = Histogram(
            "gen_ai_client_token_usage", "Tokens per GenAI operation (OpenTelemetry semantic "
            "conventions).", ["gen_ai_provider_name", "gen_ai_operation_name",
                              "gen_ai_response_model", "gen_ai_token_type"],
            buckets=GENAI_TOKEN_BUCKETS, registry=r)
        self._children: dict[tuple[Any, ...], Any] = {}

    def set_queue_depth_source(self, depth: Callable[[], int]) -> None:
        self.ledger_queue.set_function(lambda: float(depth()))

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, record: CallRecord) -> None:
        """The metrics sink: count one finished call."""
        child = self._child
        provider = record.provider
        model = self.model_label(record.model or record.requested_model)
        code = str(record.status) if record.status is not None else "none"
        child(self.requests, provider, record.endpoint, model, code).inc()
        if record.duration_ms is not None:
            child(self.duration, provider, model).observe(record.duration_ms / 1000.0)
        if record.ttft_ms is not None:
            child(self.ttft, provider, model).observe(record.ttft_ms / 1000.0)
        if record.error is not None:
            child(self.errors, provider, record.endpoint, record.error.value).inc()
        if record.unmetered_reason is not None:
            child(self.unmetered, record.endpoint, record.unmetered_reason.value).inc()
        usage = record.usage
        operation = GENAI_OPERATION.get(record.endpoint)
        genai_provider = GENAI_PROVIDER.get(provider, provider)
        if operation is not None and record.duration_ms is not None:
            error_type = record.error.value if record.error else ""
            child(self.genai_duration, genai_provider, operation, model,
                  error_type).observe(record.duration_ms / 1000.0)
        if usage is None:
            return
        for token_type, count in zip(TOKEN_TYPES, (
                usage.input_tokens, usage.cached_input_tokens, usage.output_tokens,
                usage.reasoning_tokens, usage.image_input_tokens), strict=True):
            if count:
                child(self.tokens, provider, model, token_type).inc(count)
        if operation is not None:
            child(self.genai_tokens, genai_provider, operation, model,
                  "input").observe(usage.input_tokens)
            child(self.genai_tokens, genai_provider, operation, model,
                  "output").observe(usage.output_tokens)
