"""Every Prometheus metric the daemon exports, declared in one place, on a registry passed in.

`Metrics.observe(record)` is the metrics sink. It runs once per call, so the per-call metrics are
lock-free loop metrics (see `daemon.metrics.loop`): prometheus_client's locked children would cost
as much as the relay. Rare updates (prices, fingerprints, ledger) use prometheus_client.
Labels that come from traffic (model, app, key) are bounded (`daemon.metrics.labels`).

Why it is long: every metric is declared here, in one place, each with its help text (the one
list the README and the dashboards' contract test check), beside the two sinks that update them
per call (`Metrics.observe`, and `Metrics.observe_batch_result` for a Batch API result's row).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from daemon import __version__
from daemon.metrics.labels import BoundedLabel
from daemon.metrics.loop import LoopCounter, LoopGauge, LoopHistogram
from daemon.pricing import ModelPrice
from daemon.record import CallRecord, CostSource
from daemon.units import TICKS_PER_TOKEN_PER_USD_PER_1M, TICKS_PER_USD

__all__ = ["BoundedLabel", "Metrics", "ReconciliationGauges"]

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
# OpenTelemetry GenAI semantic conventions' advised buckets.
GENAI_DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
GENAI_TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
_CODES: dict[int | None, str] = {None: "none", **{c: str(c) for c in range(100, 600)}}
TOKEN_TYPES = ("input", "cached_input", "output", "reasoning", "image_input")
BATCH_RESULT = "batches.result"  # a derived record's endpoint (daemon.dialects.batches)
GENAI_PROVIDER = {"xai": "x_ai", "openai": "openai", "anthropic": "anthropic"}
GENAI_OPERATION = {
    "chat.completions": "chat",
    "responses": "chat",
    "messages": "chat",
    "completions": "text_completion",
    "complete": "text_completion",
    "images.generations": "generate_content",
    "images.edits": "generate_content",
}


class _LabelKeys:
    """The label tuples of one (provider, endpoint, model), made once rather than per call."""

    __slots__ = (
        "genai",
        "genai_input",
        "genai_output",
        "pm",
        "requests",
        "rl_requests",
        "rl_tokens",
        "tokens",
    )

    def __init__(self, provider: str, endpoint: str, model: str) -> None:
        self.pm = (provider, model)
        self.rl_requests = (provider, model, "requests")
        self.rl_tokens = (provider, model, "tokens")
        self.requests: dict[int | None, tuple[str, ...]] = {}
        self.tokens = tuple((provider, model, kind) for kind in TOKEN_TYPES)
        operation = GENAI_OPERATION.get(endpoint)
        self.genai = (
            None
            if operation is None
            else (GENAI_PROVIDER.get(provider, provider), operation, model)
        )
        self.genai_input = (*self.genai, "input") if self.genai else ()
        self.genai_output = (*self.genai, "output") if self.genai else ()


class ReconciliationGauges:
    """The reconciliation of the last complete UTC day against xAI's bill (issue 13; set by
    `daemon.management.reconcile.DailyReconciliation`): per xAI ``api_key_id`` (the team's
    keys, so bounded; ``unjoined`` for calls of keys not joined yet), USD. Absent until the
    first run (no management key: never)."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.billed = LoopGauge(
            "xai_meter_billing_reconciliation_billed_usd",
            "xAI's bill (Management API usage) of the last complete UTC day, per api_key_id.",
            ["api_key_id"],
            r,
        )
        self.ledger = LoopGauge(
            "xai_meter_billing_reconciliation_ledger_usd",
            "The ledger's cost of the same day and key (unjoined: calls of keys with no "
            "api_key_id yet).",
            ["api_key_id"],
            r,
        )
        self.gap = LoopGauge(
            "xai_meter_billing_reconciliation_gap_usd",
            "Ledger minus billed, same day and key.",
            ["api_key_id"],
            r,
        )
        self.day = LoopGauge(
            "xai_meter_billing_reconciliation_day_timestamp_seconds",
            "Start (00:00 UTC) of the day the reconciliation gauges describe.",
            [],
            r,
        )

    def set(self, day_start: float, per_key: dict[str, tuple[int, int]]) -> None:
        """The day's (billed, ledger) ticks per api_key_id; series of other keys go."""
        billed, ledger, gap = self.billed.values, self.ledger.values, self.gap.values
        for values in (billed, ledger, gap):
            values.clear()
        for key, (b, led) in per_key.items():
            billed[(key,)] = b / TICKS_PER_USD
            ledger[(key,)] = led / TICKS_PER_USD
            gap[(key,)] = (led - b) / TICKS_PER_USD
        self.day.set((), day_start)


class Metrics:
    """Every metric the daemon exports, registered on the `CollectorRegistry` passed in.
    `observe` is the metrics sink, once per finished call: requests by status code, duration and
    TTFT (ours and the upstream's), rate-limit gauges, errors, unmetered reasons, cost by model,
    app and key (or an unpriced call), reported vs computed cost, tokens by type and the GenAI
    histograms. Labels from traffic (model, app, key) are bounded."""

    def __init__(
        self,
        registry: CollectorRegistry,
        max_models: int = 50,
        apps: Iterable[str] = (),
        max_apps: int = 20,
        max_keys: int = 20,
    ) -> None:
        self.registry = registry
        self.model_label = BoundedLabel(max_models)
        self.app_label = BoundedLabel(max_apps, apps)
        self.key_label = BoundedLabel(max_keys)
        self._keys: dict[tuple[str, str, str], _LabelKeys] = {}
        r = registry
        self.requests = LoopCounter(
            "xai_meter_requests",
            'Relayed calls, by the HTTP status the client got (code "none" when it got none).',
            ["provider", "endpoint", "model", "code"],
            r,
        )
        self.tokens = LoopCounter(
            "xai_meter_tokens",
            "Tokens by type: input (incl. cached), cached_input, output "
            "(incl. reasoning), reasoning, image_input.",
            ["provider", "model", "type"],
            r,
        )
        self.duration = LoopHistogram(
            "xai_meter_request_duration_seconds",
            "Whole call, request start to last byte.",
            ["provider", "model"],
            DURATION_BUCKETS,
            r,
        )
        self.ttft = LoopHistogram(
            "xai_meter_time_to_first_token_seconds",
            "Streams: request start to the first generated token.",
            ["provider", "model"],
            TTFT_BUCKETS,
            r,
        )
        self.upstream_ttft = LoopHistogram(
            "xai_meter_upstream_ttft_seconds",
            "The upstream's own time to first token (x-metrics-ttft-ms), beside ours.",
            ["provider", "model"],
            TTFT_BUCKETS,
            r,
        )
        self.ratelimit_limit = LoopGauge(
            "xai_meter_ratelimit_limit",
            "The upstream's rate limit (x-ratelimit-limit-*), by kind: requests or tokens.",
            ["provider", "model", "kind"],
            r,
        )
        self.ratelimit_remaining = LoopGauge(
            "xai_meter_ratelimit_remaining",
            "What is left of it as of the latest call (x-ratelimit-remaining-*).",
            ["provider", "model", "kind"],
            r,
        )
        self.unmetered = LoopCounter(
            "xai_meter_unmetered",
            "Billable calls whose usage could not be read, by reason.",
            ["endpoint", "reason"],
            r,
        )
        self.errors = LoopCounter(
            "xai_meter_call_errors",
            "Calls that did not end normally, by error kind.",
            ["provider", "endpoint", "error"],
            r,
        )
        self.in_flight = Gauge(
            "xai_meter_in_flight_requests", "Calls being relayed now.", registry=r
        )
        # The relay port's limits (daemon.connections); gauges read at scrape time.
        self.relay_connections = Gauge(
            "xai_meter_relay_connections",
            "Client connections open on the relay port now (refused ones aside).",
            registry=r,
        )
        self.relay_max_connections = Gauge(
            "xai_meter_relay_max_connections",
            "relay.max_connections in force (derived from the open-file limit when 0).",
            registry=r,
        )
        self.relay_body_bytes = Gauge(
            "xai_meter_relay_body_bytes_in_flight",
            "Request body bytes held by calls now (at most relay.max_body_bytes_in_flight).",
            registry=r,
        )
        self.relay_rejected = LoopCounter(
            "xai_meter_relay_rejected",
            "Connections and calls the relay's own limits refused, by reason: "
            "too_many_connections, header_timeout (no ledger row: no request was read), "
            "body_timeout, body_bytes_exhausted, request_too_large, loop_detected (a request "
            "that came back round a loop of relays) (each also a ledger row).",
            ["reason"],
            r,
        )
        # A client's base URL without its /v1 (daemon.missing_v1): rare, the relay's 404 path.
        self.missing_v1 = Counter(
            "xai_meter_missing_v1",
            "Calls to a path that lacks /v1 (a client's base URL set to http://HOST:PORT, not "
            "http://HOST:PORT/v1), answered 404 as any unknown path, by the endpoint it meant.",
            ["endpoint"],
            registry=r,
        )
        # Its opposite (daemon.missing_v1): an SDK that adds /v1 itself, given a base URL ending
        # in /v1, asks for /v1/v1/...; counted on the upstream's 404 of such a path only.
        self.doubled_v1 = Counter(
            "xai_meter_doubled_v1",
            "Calls to a path under /v1/v1/ (a base URL ending in /v1 given to an SDK that adds "
            "/v1 itself, such as Anthropic's) that the upstream answered 404, by the endpoint "
            "it meant.",
            ["endpoint"],
            registry=r,
        )
        self.ledger_queue = Gauge(
            "xai_meter_ledger_queue_depth", "Ledger rows waiting to be written.", registry=r
        )
        self.ledger_rows = Counter(
            "xai_meter_ledger_rows_written", "Rows written to the ledger.", registry=r
        )
        self.ledger_deleted = Counter(
            "xai_meter_ledger_rows_deleted",
            "Calls deleted by retention (ledger.retention_days).",
            registry=r,
        )
        self.ledger_errors = Counter(
            "xai_meter_ledger_write_errors", "Failed ledger write attempts.", registry=r
        )
        self.ledger_healthy = Gauge(
            "xai_meter_ledger_healthy",
            "1 while the ledger's last writes (SQLite and the journal) succeeded, else 0 "
            "(rows wait in the journal meanwhile).",
            registry=r,
        )
        self.sink_errors = Counter(
            "xai_meter_sink_errors",
            "Exceptions raised by a sink (metering code) while "
            "handling a finished call; the relay is unaffected.",
            ["sink"],
            registry=r,
        )
        self.cost = LoopCounter(
            "xai_meter_cost_usd",
            "Spend in USD: the cost xAI reported where it did, else the "
            "cost computed from the price list.",
            ["provider", "model"],
            r,
        )
        self.cost_by_app = LoopCounter(
            "xai_meter_app_cost_usd",
            "Spend in USD by app (X-Meter-App header).",
            ["provider", "app"],
            r,
        )
        self.cost_by_key = LoopCounter(
            "xai_meter_key_cost_usd",
            "Spend in USD by key id (a salted hash, never the key).",
            ["provider", "key_id"],
            r,
        )
        self.reconciled_reported = LoopCounter(
            "xai_meter_reconciled_reported_usd",
            "Cost xAI reported, over calls that also have "
            "a computed cost (compare with xai_meter_reconciled_computed_usd_total).",
            ["provider", "model"],
            r,
        )
        self.reconciled_computed = LoopCounter(
            "xai_meter_reconciled_computed_usd",
            "Cost computed from the price list, over calls that also have a reported cost.",
            ["provider", "model"],
            r,
        )
        self.batch_cost = LoopCounter(
            "xai_meter_batch_cost_usd",
            "Spend on Batch API results in USD (also in xai_meter_cost_usd_total): the cost "
            "xAI reported, else the computed one.",
            ["provider", "model"],
            r,
        )
        self.batch_computed = LoopCounter(
            "xai_meter_batch_computed_usd",
            "The computed cost of the same batch results (price list, less the catalog's batch "
            "discount): its gap to xai_meter_batch_cost_usd_total is the discount's drift.",
            ["provider", "model"],
            r,
        )
        self.batch_results = LoopCounter(
            "xai_meter_batch_results",
            "Batch API results read from results pages, each counted once: outcome ok "
            "(an answer) or error (the request failed).",
            ["provider", "model", "outcome"],
            r,
        )
        self.unpriced = LoopCounter(
            "xai_meter_unpriced",
            "Calls with usage that could not be priced (unknown model, no "
            "prices yet); they are priced later when prices arrive.",
            ["model"],
            r,
        )
        self.backfilled = Counter(
            "xai_meter_backfilled",
            "Unpriced calls priced later from newly fetched prices.",
            registry=r,
        )
        self.price = Gauge(
            "xai_meter_price_usd_per_million_tokens",
            "Price in force per model and token type.",
            ["model", "type"],
            registry=r,
        )
        self.price_refresh_last_success = Gauge(
            "xai_meter_price_refresh_last_success_timestamp_seconds",
            "When the price listings were last fetched successfully (0: never).",
            registry=r,
        )
        self.price_refresh_enabled = Gauge(
            "xai_meter_price_refresh_enabled",
            "1 when the daemon fetches price listings "
            "(pricing.refresh), 0 when prices come from overrides only.",
            registry=r,
        )
        self.price_refresh_failures = Counter(
            "xai_meter_price_refresh_failures",
            "Price refreshes that failed after all retries.",
            registry=r,
        )
        self.fingerprint = Gauge(
            "xai_meter_fingerprint_info",
            "1 for the system_fingerprint a model answers with now "
            "(the series of the previous one is removed on change).",
            ["provider", "model", "fingerprint"],
            registry=r,
        )
        self.fingerprint_changes = Counter(
            "xai_meter_fingerprint_changes",
            'Fingerprint changes per model: kind "new" (never '
            'seen before: a new backend configuration) or "known" (one seen before, back).',
            ["provider", "model", "kind"],
            registry=r,
        )
        self.fingerprint_last_change = Gauge(
            "xai_meter_fingerprint_last_change_timestamp_seconds",
            "When the model's fingerprint last changed.",
            ["provider", "model"],
            registry=r,
        )
        self.fingerprint_listing_mismatch = Gauge(
            "xai_meter_fingerprint_listing_mismatch",
            "1 when the fingerprint in traffic differs "
            "from the one /v1/language-models lists for the model, else 0.",
            ["provider", "model"],
            registry=r,
        )
        self.reconciliation = ReconciliationGauges(r)  # issue 13: xAI's bill vs the ledger
        self.build = Info("xai_meter_build", "Version of the running daemon.", registry=r)
        self.build.info({"version": __version__})
        self.genai_duration = LoopHistogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration (OpenTelemetry semantic conventions).",
            [
                "gen_ai_provider_name",
                "gen_ai_operation_name",
                "gen_ai_response_model",
                "error_type",
            ],
            GENAI_DURATION_BUCKETS,
            r,
        )
        self.genai_tokens = LoopHistogram(
            "gen_ai_client_token_usage",
            "Tokens per GenAI operation (OpenTelemetry semantic conventions).",
            [
                "gen_ai_provider_name",
                "gen_ai_operation_name",
                "gen_ai_response_model",
                "gen_ai_token_type",
            ],
            GENAI_TOKEN_BUCKETS,
            r,
        )

        # -- per key, measured on every call (the headroom against a key's limits), and the
        # Management and Billing API (daemon.management.refresh): those are set only while a
        # management key is configured, so without one their families have no samples.
        self.key_requests = LoopCounter(
            "xai_meter_key_requests",
            "Relayed calls by key id (a salted hash, never the key): measured, for the "
            "headroom against the key's qpm limit.",
            ["provider", "key_id"],
            r,
        )
        self.key_tokens = LoopCounter(
            "xai_meter_key_tokens",
            "Measured input + output tokens by key id, for the headroom against its tpm limit.",
            ["provider", "key_id"],
            r,
        )
        self.api_key_info = LoopGauge(
            "xai_meter_api_key_info",
            '1 per API key of the team (Management API): its key id in our traffic ("" when '
            'never seen), xAI\'s api_key_id, name, and disabled ("true"/"false").',
            ["key_id", "api_key_id", "name", "disabled"],
            r,
        )
        self.api_key_limit = LoopGauge(
            "xai_meter_api_key_limit",
            "A key's rate limit as xAI sets it: limit tpm (tokens per minute), qpm (requests "
            "per minute) or qps (requests per second); absent when unset.",
            ["api_key_id", "limit"],
            r,
        )
        self.api_key_expiry = LoopGauge(
            "xai_meter_api_key_expiry_timestamp_seconds",
            "When a key expires (only keys with an expireTime).",
            ["api_key_id"],
            r,
        )
        self.billing_prepaid_balance = LoopGauge(
            "xai_meter_billing_prepaid_balance_usd",
            "Prepaid credit left, USD, as xAI's Management API says.",
            [],
            r,
        )
        self.billing_spending_limit = LoopGauge(
            "xai_meter_billing_spending_limit_usd",
            "Monthly postpaid spending limit, USD, by kind: hard, effective_hard, soft, effective.",
            ["kind"],
            r,
        )
        self.billing_invoice_preview = LoopGauge(
            "xai_meter_billing_invoice_preview_usd",
            "This billing period's postpaid invoice so far (month to date), USD, as xAI's "
            "invoice preview says.",
            [],
            r,
        )
        self.management_failures = LoopCounter(
            "xai_meter_management_refresh_failures",
            "Management API fetches that failed after all retries, by what: validation, keys, "
            "balance, spending_limits, invoice, usage, key_lookup.",
            ["what"],
            r,
        )
        self.management_last_success = LoopGauge(
            "xai_meter_management_last_success_timestamp_seconds",
            "When each Management API fetch last succeeded, by what.",
            ["what"],
            r,
        )

    def set_prices(self, models: Iterable[ModelPrice]) -> None:
        """Price gauges for the prices now in force; listed models get their own label."""
        self.price.clear()
        for mp in models:
            self.model_label.add_known([mp.model, *mp.aliases])
            for kind, ticks in (
                ("input", mp.input),
                ("cached_input", mp.cached_input),
                ("output", mp.output),
                ("image_input", mp.image_input),
            ):
                if ticks is not None:
                    self.price.labels(mp.model, kind).set(ticks / TICKS_PER_TOKEN_PER_USD_PER_1M)

    def observe_backfill(self, record: CallRecord) -> None:
        """A call priced after the fact: add its cost now."""
        if record.cost_ticks is not None:
            self.backfilled.inc()
            model = self.model_label(record.model or record.requested_model)
            usd = self._count_cost(record, model)
            if record.endpoint == BATCH_RESULT:
                self.batch_cost.inc((record.provider, model), usd)
                if record.computed_cost_ticks is not None:
                    computed = record.computed_cost_ticks / TICKS_PER_USD
                    self.batch_computed.inc((record.provider, model), computed)

    def _count_cost(self, record: CallRecord, model: str) -> float:
        """Add a priced call's cost to the spend counters; return it in USD."""
        usd = (record.cost_ticks or 0) / TICKS_PER_USD
        self.cost.inc((record.provider, model), usd)
        if record.app:
            self.cost_by_app.inc((record.provider, self.app_label(record.app)), usd)
        if record.key_id:
            self.cost_by_key.inc((record.provider, self.key_label(record.key_id)), usd)
        return usd

    def _set_ratelimit(
        self,
        keys: _LabelKeys,
        ratelimit: tuple[float | None, float | None, float | None, float | None],
    ) -> None:
        limit_req, remaining_req, limit_tok, remaining_tok = ratelimit
        limit, remaining = self.ratelimit_limit.values, self.ratelimit_remaining.values
        if limit_req is not None:
            limit[keys.rl_requests] = limit_req
        if remaining_req is not None:
            remaining[keys.rl_requests] = remaining_req
        if limit_tok is not None:
            limit[keys.rl_tokens] = limit_tok
        if remaining_tok is not None:
            remaining[keys.rl_tokens] = remaining_tok

    def observe_batch_result(self, record: CallRecord) -> None:
        """Count one Batch API result (a derived record, never a relayed call: it is not in
        the request, latency or error metrics): its outcome, spend (in the spend metrics and
        the batch ones), reconciliation, tokens, and why it is unmetered or unpriced."""
        provider = record.provider
        model = self.model_label(record.model or record.requested_model)
        pm = (provider, model)
        outcome = "error" if record.upstream_error else "ok"
        self.batch_results.inc((provider, model, outcome))
        if record.unmetered_reason is not None:
            self.unmetered.inc((record.endpoint, record.unmetered_reason.value))
        if record.cost_ticks is not None:
            usd = self._count_cost(record, model)
            self.batch_cost.inc(pm, usd)
            computed = record.computed_cost_ticks
            if computed is not None:
                self.batch_computed.inc(pm, computed / TICKS_PER_USD)
                if record.cost_source is CostSource.REPORTED:
                    self.reconciled_reported.inc(pm, usd)
                    self.reconciled_computed.inc(pm, computed / TICKS_PER_USD)
        elif record.cost_source is CostSource.UNPRICED:
            self.unpriced.inc((model,))
        u = record.usage
        if u is None:
            return
        counts = (u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens)
        for kind, count in zip(TOKEN_TYPES, (*counts, u.image_input_tokens), strict=True):
            if count:
                self.tokens.inc((provider, model, kind), count)

    def watch_relay_limits(
        self,
        connections: Callable[[], int],
        max_connections: int,
        body_bytes: Callable[[], int],
    ) -> None:
        """Read the relay port's open connections and held body bytes at scrape time."""
        self.relay_connections.set_function(lambda: float(connections()))
        self.relay_max_connections.set(max_connections)
        self.relay_body_bytes.set_function(lambda: float(body_bytes()))

    def set_ledger_sources(self, depth: Callable[[], int], healthy: Callable[[], bool]) -> None:
        """Read the ledger's queue depth (rows) and health (True/False) at scrape time."""
        self.ledger_queue.set_function(lambda: float(depth()))
        self.ledger_healthy.set_function(lambda: float(healthy()))

    def observe(self, record: CallRecord) -> None:
        """The metrics sink: count one finished call (a batch result: `observe_batch_result`)."""
        provider, endpoint = record.provider, record.endpoint
        if endpoint == BATCH_RESULT:
            self.observe_batch_result(record)
            return
        model = self.model_label(record.model or record.requested_model)
        keys = self._keys.get((provider, endpoint, model))
        if keys is None:
            keys = self._keys[(provider, endpoint, model)] = _LabelKeys(provider, endpoint, model)
        status = record.status
        requests = self.requests.values
        key = keys.requests.get(status)
        if key is None:
            key = keys.requests[status] = (
                provider,
                endpoint,
                model,
                _CODES.get(status) or str(status),
            )
        requests[key] = requests.get(key, 0.0) + 1.0
        key_id = record.key_id
        if key_id:  # per key, for the headroom against its limits: two dict updates at most
            by_key = (provider, self.key_label(key_id))
            key_requests = self.key_requests.values
            key_requests[by_key] = key_requests.get(by_key, 0.0) + 1.0
        pm = keys.pm
        if record.duration_ms is not None:
            self.duration.observe(pm, record.duration_ms / 1000.0)
        if record.ttft_ms is not None:
            self.ttft.observe(pm, record.ttft_ms / 1000.0)
        if record.upstream_ttft_ms is not None:
            self.upstream_ttft.observe(pm, record.upstream_ttft_ms / 1000.0)
        ratelimit = record.ratelimit
        if ratelimit is not None:
            self._set_ratelimit(keys, ratelimit)
        if record.error is not None:
            self.errors.inc((provider, endpoint, record.error.value))
        if record.unmetered_reason is not None:
            self.unmetered.inc((endpoint, record.unmetered_reason.value))
        if record.cost_ticks is not None:
            usd = self._count_cost(record, model)
            if record.computed_cost_ticks is not None and record.cost_source is CostSource.REPORTED:
                self.reconciled_reported.inc(pm, usd)
                self.reconciled_computed.inc(pm, record.computed_cost_ticks / TICKS_PER_USD)
        elif record.cost_source is CostSource.UNPRICED:
            self.unpriced.inc((model,))
        genai = keys.genai
        if genai is not None and record.duration_ms is not None:
            self.genai_duration.observe(
                (*genai, record.error.value if record.error else ""), record.duration_ms / 1000.0
            )
        usage = record.usage
        if usage is None:
            return
        tokens = self.tokens.values
        for key, count in zip(
            keys.tokens,
            (
                usage.input_tokens,
                usage.cached_input_tokens,
                usage.output_tokens,
                usage.reasoning_tokens,
                usage.image_input_tokens,
            ),
            strict=True,
        ):
            if count:
                tokens[key] = tokens.get(key, 0.0) + count
        if key_id:
            key_tokens = self.key_tokens.values
            measured = usage.input_tokens + usage.output_tokens
            key_tokens[by_key] = key_tokens.get(by_key, 0.0) + measured
        if genai is not None:
            self.genai_tokens.observe(keys.genai_input, usage.input_tokens)
            self.genai_tokens.observe(keys.genai_output, usage.output_tokens)
