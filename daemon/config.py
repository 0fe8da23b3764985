"""Settings: one declarative table, read from TOML into frozen, typed values.

Every setting is declared once in `SETTINGS` (key, default, type, help). The example config,
`xai-meter check-config` and the docs test are all derived from that table, so none can go stale.
A bad file fails at start with a `ConfigError` holding every mistake it has (unknown keys,
wrong types and values, settings that cannot go together), each a line naming the key and the
fix; `to_toml` writes the effective settings back as TOML (what check-config prints). Code
reads the typed, frozen view: ``settings.relay.port`` (one dataclass per section, checked by
mypy).

Why it is long: the SETTINGS table is the documentation of every setting (its help text becomes
config.example.toml and the README's table), and the typed sections mirror it field for field;
kept together, a setting and its field cannot drift apart (a test checks they match).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from yarl import URL

from daemon.loops import is_wildcard, own_address


class ConfigError(ValueError):
    """A config value is wrong; the message names the key and how to fix it.

    One error or several (``ConfigError(first, second)``: a file with more than one mistake,
    every one found in one read); `messages` holds each, one line apiece, and ``str()`` joins
    them with newlines.
    """

    def __init__(self, *messages: str) -> None:
        super().__init__("\n".join(messages))
        self.messages: tuple[str, ...] = messages


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # dotted: "relay.port"
    default: Any
    help: str
    check: Callable[[str, Any], Any]  # returns the typed value or raises ConfigError


def _int_in(lo: int, hi: int) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(
                f"{key} = {value!r}: expected a whole number from {lo} to {hi}. "
                f"Fix: set {key} to such a number, or remove it to use the default."
            )
        return value

    return check


def _positive_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(
            f"{key} = {value!r}: expected a number of seconds greater than 0. "
            f"Fix: set {key} = 30 (for example)."
        )
    return float(value)


def _non_negative_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(
            f"{key} = {value!r}: expected a number of seconds, 0 or more. "
            f"Fix: set {key} to such a number, or remove it to use the default."
        )
    return float(value)


def _multiplier(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 10:
        raise ConfigError(
            f"{key} = {value!r}: expected a number greater than 0 and at most 10 that token "
            f"prices are multiplied by. Fix: set {key} = 1.1 for xAI's US regional endpoint "
            f"(https://us.api.x.ai), or {key} = 1.0 (the default) for api.x.ai."
        )
    return float(value)


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f'{key} = {value!r}: expected a string. Fix: quote it, {key} = "...".')
    return value


def _ledger_url(key: str, value: Any) -> str:
    text = _str(key, value)
    if text and not text.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"{key} = {text!r}: expected a PostgreSQL URL. Fix: set {key} = "
            f'"postgresql://USER@HOST:5432/DB", or remove it to keep the SQLite ledger at '
            f"ledger.path."
        )
    return text


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(
            f"{key} = {value!r}: expected true or false. "
            f"Fix: {key} = true or {key} = false (TOML booleans, unquoted)."
        )
    return value


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(
                f"{key} = {value!r}: expected one of {', '.join(repr(c) for c in choices)}. "
                f'Fix: {key} = "{choices[0]}" (for example), or remove it to use the default.'
            )
        return str(value)

    return check


def _host(key: str, value: Any) -> str:
    text = _str(key, value)
    if not text or any(c.isspace() for c in text):
        raise ConfigError(
            f"{key} = {text!r}: expected a host name or IP address. "
            f'Fix: {key} = "127.0.0.1" (this machine only), or "0.0.0.0" (every address).'
        )
    return text


def _base_url(key: str, value: Any) -> str:
    value = _str(key, value)
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            f'{key} = {value!r}: expected an http(s) URL with a host, like "https://api.x.ai". '
            f"Fix: give the upstream's base URL without the /v1 path."
        )
    if url.path not in ("", "/") or url.query_string or url.fragment:
        raise ConfigError(
            f"{key} = {value!r}: give only scheme, host and port (the relay keeps the request's "
            f'own path). Fix: {key} = "{url.origin()}".'
        )
    return str(url.origin())


def _grpc_upstream(key: str, value: Any) -> str:
    text = _str(key, value)
    url = URL(text) if "://" in text else None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            f"{key} = {text!r}: expected https://HOST[:PORT] (TLS, port 443 by default) or "
            f'http://HOST:PORT (plaintext). Fix: {key} = "https://api.x.ai", or '
            f'"http://127.0.0.1:8791" for a local simulator.'
        )
    if url.path not in ("", "/") or url.query_string or url.fragment or url.user:
        raise ConfigError(
            f"{key} = {text!r}: give only scheme, host and port (gRPC calls keep their own "
            f'method path). Fix: {key} = "{url.origin()}".'
        )
    return str(url.origin())


def _overrides(key: str, value: Any) -> dict[str, Any]:
    from daemon.pricing import OverrideError, parse_overrides

    if not isinstance(value, Mapping):
        raise ConfigError(
            f'{key}: expected a table of models, like [{key}."my-model"] with '
            f"input = 2.0, output = 10.0 (USD per 1M tokens)."
        )
    try:
        parse_overrides(value)
    except OverrideError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return {str(k): dict(v) for k, v in value.items()}


def _str_list(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"{key} = {value!r}: expected a list of strings. "
            f'Fix: {key} = ["checkout"] (for example), or [] for none.'
        )
    return tuple(value)


def _optional_url(key: str, value: Any) -> str:
    text = _str(key, value)
    url = URL(text)
    if text and (url.scheme not in ("http", "https") or not url.host):
        raise ConfigError(
            f"{key} = {text!r}: expected an http(s) URL. "
            f'Fix: {key} = "https://example.com/hook" (for example), or "" for none.'
        )
    return text


_PREFIX = re.compile(r"^(/[a-z0-9][a-z0-9._-]*)+$")
_UPSTREAM_KEYS = ("base_url", "prefix", "provider", "api_key_env", "price_multiplier")


def _upstreams(key: str, value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{key}: expected tables of upstreams. Fix: write them as [{key}.openai] with "
            f'base_url = "https://api.openai.com" and prefix = "/openai".'
        )
    out: dict[str, dict[str, Any]] = {}
    prefixes: dict[str, str] = {}
    errors: list[str] = []  # every entry's every mistake, reported together
    for name, entry in value.items():
        where = f"{key}.{name}"
        if not isinstance(entry, Mapping):
            errors.append(
                f"{where}: expected a table. Fix: write it as [{where}] with "
                f'base_url = "https://api.openai.com" and prefix = "/openai".'
            )
            continue
        found = len(errors)
        for unknown in sorted(set(entry) - set(_UPSTREAM_KEYS)):
            errors.append(
                f"{where}.{unknown}: no such setting. Fix: remove it; an upstream takes "
                f"{', '.join(_UPSTREAM_KEYS)}."
            )
        for required in ("base_url", "prefix"):
            if required not in entry:
                errors.append(
                    f"{where}.{required} is missing. Fix: for example "
                    f'base_url = "https://api.openai.com", prefix = "/openai" '
                    f"(apps then use http://127.0.0.1:8787/openai/v1)."
                )
        checked: dict[str, Any] = {}
        for field_name, check, default in (
            ("base_url", _base_url, None),
            ("prefix", _prefix, None),
            ("provider", _host, str(name)),
            ("api_key_env", _env_name, ""),
            ("price_multiplier", _multiplier, 1.0),
        ):
            raw = entry.get(field_name, default)
            if raw is None:
                continue  # a required one, missing: said above
            try:
                checked[field_name] = check(f"{where}.{field_name}", raw)
            except ConfigError as exc:
                errors.extend(exc.messages)
        prefix = checked.get("prefix")
        if prefix is not None:
            if prefix in prefixes:
                errors.append(
                    f"{where}.prefix = {prefix!r} is already the prefix of "
                    f"{key}.{prefixes[prefix]}. Fix: give each upstream its own."
                )
            else:
                prefixes[prefix] = str(name)
        if len(errors) == found:
            out[str(name)] = checked
    if errors:
        raise ConfigError(*errors)
    return out


def _prefix(key: str, value: Any) -> str:
    prefix = _str(key, value).rstrip("/")
    if not _PREFIX.match(prefix) or prefix.split("/")[1] == "v1":
        raise ConfigError(
            f"{key} = {value!r}: expected a path of lower case letters, digits, . _ - "
            f'segments, not /v1. Fix: {key} = "/openai" (for example).'
        )
    return prefix


def _env_name(key: str, value: Any) -> str:
    text = _str(key, value)
    if text and not text.replace("_", "a").isalnum():
        raise ConfigError(
            f"{key} = {text!r}: expected the *name* of an environment variable (like "
            f'"XAI_API_KEY"), not a key. Fix: export the key in that variable and name it here.'
        )
    return text


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "relay.host",
        "127.0.0.1",
        "Address the relay listens on. Apps set their base URL to "
        "http://HOST:PORT/v1. Keep it on loopback unless you mean to share it.",
        _host,
    ),
    Setting("relay.port", 8787, "Port of the relay listener.", _int_in(0, 65535)),
    Setting(
        "relay.header_timeout",
        10.0,
        "Seconds from accepting a connection until its first request's headers are complete "
        "(later requests on it: relay.idle_timeout from the previous answer). Past it the "
        "connection is closed, with a 408 if part of a request came (nginx's "
        "client_header_timeout). Counted in xai_meter_relay_rejected_total; no ledger row.",
        _positive_float,
    ),
    Setting(
        "relay.body_timeout",
        60.0,
        "Seconds a request body may take to arrive, in all, from its headers (not between "
        "reads: a body sent a byte at a time is cut too). Past it the call is answered 408 "
        "body_timeout, recorded with that status, and the connection closed. Raise it for big "
        "uploads over slow links.",
        _positive_float,
    ),
    Setting(
        "relay.idle_timeout",
        75.0,
        "Seconds a keep-alive connection may sit idle between requests (aiohttp's "
        "keepalive_timeout) before it is closed.",
        _positive_float,
    ),
    Setting(
        "relay.max_connections",
        0,
        "Client connections open on the relay port at most; 0 derives it at start from the "
        "open-file limit (ulimit -n) less a reserve for the upstream pool (upstream."
        "max_connections), the ledger and the admin listener, at most 32768. Past it a new "
        "connection is answered 503 too_many_connections and closed. A value the file limit "
        "cannot hold stops the daemon at start.",
        _int_in(0, 1_000_000),
    ),
    Setting(
        "relay.max_body_bytes_in_flight",
        512 * 1024 * 1024,
        "Request body bytes all calls may hold at once (bodies are read whole before they go "
        "upstream). A call whose body would pass it is answered 503 body_bytes_exhausted with "
        "Retry-After and recorded; a body bigger than it (or than 100 MiB, the per-call limit) "
        "is answered 413 request_too_large.",
        _int_in(1024, 1 << 40),
    ),
    Setting(
        "relay.max_scan_bytes",
        16 * 1024 * 1024,
        "Most bytes of one streamed (SSE) event, or of one whole answer body, kept to read usage "
        "from (16 MiB). A larger one is relayed untouched but unread, so a huge event costs "
        "neither memory nor a stalled relay; a 2xx answer whose usage was in one is unmetered "
        "(too_large). Raise it if you ask for many large base64 images in one answer.",
        _int_in(64 * 1024, 1024 * 1024 * 1024),
    ),
    Setting(
        "admin.host",
        "127.0.0.1",
        "Address of the admin listener (/metrics, /healthz, /readyz).",
        _host,
    ),
    Setting("admin.port", 9787, "Port of the admin listener.", _int_in(0, 65535)),
    Setting(
        "grpc.host",
        "127.0.0.1",
        "Address of the gRPC listener, for xAI's own SDK (xai-sdk): "
        'Client(api_host="HOST:PORT", use_insecure_channel=True). Every method of every service '
        "is relayed to grpc.upstream, bytes untouched; the billed ones are metered like REST.",
        _host,
    ),
    Setting(
        "grpc.port",
        8790,
        "Port of the gRPC listener; 0 turns it off.",
        _int_in(0, 65535),
    ),
    Setting(
        "grpc.upstream",
        "https://api.x.ai",
        "Where gRPC calls go: https://HOST[:PORT] (TLS with the system's CA certificates, port "
        "443 by default) or http://HOST:PORT (plaintext: a simulator, a test).",
        _grpc_upstream,
    ),
    Setting(
        "upstream.base_url",
        "https://api.x.ai",
        "Where calls under /v1/ are forwarded: scheme, host and port only.",
        _base_url,
    ),
    Setting(
        "upstream.connect_timeout",
        10.0,
        "Seconds to get a connection to the upstream (a free one from the pool, or a new one) "
        "before answering 503 upstream_pool_exhausted (every pooled one stayed busy) or 504.",
        _positive_float,
    ),
    Setting(
        "upstream.read_timeout",
        3600.0,
        "Seconds the upstream may stay silent (before its "
        "headers, or between two chunks) before the call is ended with 504. Reasoning "
        "models can think for many minutes before the first byte of a non-streamed answer.",
        _positive_float,
    ),
    Setting(
        "upstream.max_connections",
        256,
        "Keep-alive connection pool size to the upstream; calls past it wait for a free one, "
        "up to upstream.connect_timeout.",
        _int_in(1, 100000),
    ),
    Setting(
        "upstream.price_multiplier",
        1.0,
        "Token prices of this upstream's calls are multiplied by this in the computed cost "
        "(1.1 for xAI's US regional endpoint https://us.api.x.ai). Exact decimal, rounded down "
        "to a whole tick per call; per-image, per-source and tool fees are not multiplied.",
        _multiplier,
    ),
    Setting(
        "upstreams",
        {},
        "More upstreams, each relayed under a path prefix of its own: "
        "[upstreams.NAME] base_url (scheme, host, port), prefix (apps use "
        "http://127.0.0.1:8787/PREFIX/v1), provider (metric label; default NAME; "
        '"anthropic" sends its key as x-api-key, as Anthropic expects), api_key_env (a key to add '
        "when the app sends none), price_multiplier (as upstream.price_multiplier; default "
        "1.0). Price their models with [pricing.overrides].",
        _upstreams,
    ),
    Setting(
        "auth.api_key_env",
        "",
        "Name of an environment variable holding an API key that "
        "the daemon adds to calls that carry none. Empty: the app's own key passes through "
        "and calls without one go upstream as they are.",
        _env_name,
    ),
    Setting("ledger.path", "xai-meter.db", "SQLite file of the ledger (created if missing).", _str),
    Setting(
        "ledger.url",
        "",
        "A PostgreSQL ledger shared by several daemons, postgresql://USER@HOST:PORT/DB, "
        "instead of the SQLite file at ledger.path (the journal and the salt file stay beside "
        "ledger.path). Keep the password out of it: libpq reads PGPASSWORD and ~/.pgpass. "
        "Needs the postgresql extra: pip install 'xai-meter[postgresql]'. Empty: SQLite.",
        _ledger_url,
    ),
    Setting(
        "ledger.instance",
        "",
        "This daemon's name in the ledger's instance column (which daemon wrote each row: "
        "several share one PostgreSQL ledger). Empty: the host name.",
        _str,
    ),
    Setting(
        "ledger.salt_path",
        "",
        "File of the secret salt that turns API keys into key ids (made once, mode 0600; a "
        "file readable by group or others stops the start). Empty: xai-meter.salt in the "
        "ledger's directory. Kept out of the ledger, so the ledger alone cannot confirm a "
        "guessed key, and a new ledger keeps every key id; back it up with the ledger.",
        _str,
    ),
    Setting("ledger.batch_size", 500, "Most rows written in one transaction.", _int_in(1, 100000)),
    Setting(
        "ledger.flush_interval",
        0.1,
        "Seconds the writer lets rows gather before one "
        "transaction writes them (a batch also goes as soon as batch_size rows wait). "
        "Rows are never dropped; at shutdown everything queued is written.",
        _non_negative_float,
    ),
    Setting(
        "ledger.retention_days",
        0,
        "Delete calls older than this many days (checked "
        "hourly); 0 keeps every call. Prices and fingerprint history are always kept.",
        _int_in(0, 36500),
    ),
    Setting(
        "ledger.journal_path",
        "",
        "Directory of the journal: every call's start and end are appended there before "
        "SQLite sees them, and replayed into the ledger on start (calls the daemon died in "
        "become 'crash' rows). Empty: beside the ledger, at <ledger.path>.journal.",
        _str,
    ),
    Setting(
        "ledger.fsync_interval",
        1.0,
        "Seconds between fsyncs of the journal. A killed process loses nothing either way; "
        "a power loss can lose the calls of the last interval. 0: never fsync (the OS "
        "writes when it likes, typically within 30 s).",
        _non_negative_float,
    ),
    Setting(
        "ledger.max_queue_rows",
        100000,
        "Most rows held in memory for SQLite while it is slow or refuses writes; past "
        "this they wait in the journal only, and are read back once SQLite takes writes.",
        _int_in(1, 10_000_000),
    ),
    Setting(
        "ledger.unhealthy_after",
        30.0,
        "Seconds the ledger may be unable to write (SQLite or the journal) before /readyz "
        "answers 503 degraded (xai_meter_ledger_healthy turns 0 at once).",
        _non_negative_float,
    ),
    Setting(
        "metrics.max_models",
        50,
        "Distinct model label values before further unknown "
        'models are counted as "other" (keeps Prometheus series bounded). Models in the '
        "price listing always get their own label.",
        _int_in(1, 10000),
    ),
    Setting(
        "metrics.apps",
        (),
        "App names (from the X-Meter-App header) that always get their own label on cost metrics.",
        _str_list,
    ),
    Setting(
        "metrics.max_apps",
        20,
        'Further app names labelled as first seen, before the rest are counted as "other".',
        _int_in(0, 10000),
    ),
    Setting(
        "metrics.max_keys",
        20,
        "Distinct key ids (salted hashes, never keys) labelled on "
        'cost metrics before the rest are counted as "other".',
        _int_in(0, 10000),
    ),
    Setting(
        "pricing.refresh",
        True,
        "Fetch prices from the upstream's /v1/language-models and "
        "/v1/image-generation-models at start and every refresh_interval.",
        _bool,
    ),
    Setting(
        "pricing.refresh_interval", 3600.0, "Seconds between price refreshes.", _positive_float
    ),
    Setting(
        "pricing.api_key_env",
        "XAI_API_KEY",
        "Environment variable with the key used to fetch the price listings.",
        _env_name,
    ),
    Setting(
        "pricing.use_client_key",
        True,
        "When that variable is unset, fetch the listings "
        "with the key of the most recent relayed call (held in memory only, never stored).",
        _bool,
    ),
    Setting(
        "pricing.overrides",
        {},
        "Prices that win over the listing, per model, in USD: "
        "input, cached_input, output, image_input (per 1M tokens), image (per image), search "
        "(per source), long_context_threshold, input_long, cached_input_long, output_long, "
        "cache_write and cache_write_1h (prompt-cache writes per 1M tokens, 5-minute and 1-hour; "
        "default 1.25x and 2x input). Also prices models of upstreams without a listing. "
        "[pricing.overrides.catalog] overrides the catalog of prices no listing carries, by the "
        "id and in the unit `xai-meter prices --catalog` shows, at every time.",
        _overrides,
    ),
    Setting(
        "management.api_key_env",
        "XAI_MANAGEMENT_KEY",
        "Environment variable with xAI's management key (console.x.ai, Settings, Management "
        "Keys; not an API key). Unset or empty: nothing of the Management and Billing API runs. "
        "The key is held in memory only, never stored or logged.",
        _env_name,
    ),
    Setting(
        "management.base_url",
        "https://management-api.x.ai",
        "Origin of xAI's Management API (the simulator's URL in a demo).",
        _base_url,
    ),
    Setting(
        "management.team_id",
        "",
        'The team the management key manages. "": found with '
        "GET /auth/management-keys/validation at start.",
        _str,
    ),
    Setting(
        "management.refresh_interval",
        300.0,
        "Seconds between refreshes of the team's keys, limits, prepaid balance, spending "
        "limits and invoice preview.",
        _positive_float,
    ),
    # reconciliation against xAI's bill (daemon.management.reconcile)
    Setting(
        "management.reconcile_hour_utc",
        1,
        "The daily reconciliation runs at the first refresh after this hour (UTC, 0-23), once a "
        "day: it pulls xAI's bill per day, key and unit type, stores it in the ledger and sets "
        "the reconciliation gauges for the last complete UTC day. Later hours give xAI's bill "
        "of the day before more time to settle.",
        _int_in(0, 23),
    ),
    Setting(
        "management.reconcile_days",
        7,
        "Complete UTC days the daily reconciliation pulls (a day pulled again replaces its "
        "stored copy), and the default of `xai-meter reconcile --days`.",
        _int_in(1, 366),
    ),
    Setting(
        "alerts.webhook_url",
        "",
        "When set, each fingerprint change is POSTed there as JSON "
        "(model, old, new, kind, time), retried with backoff, never delaying the relay.",
        _optional_url,
    ),
    Setting(
        "log.level",
        "info",
        "Log level: debug, info, warning or error.",
        _choice("debug", "info", "warning", "error"),
    ),
    Setting(
        "log.format",
        "auto",
        "auto (console on a TTY, JSON otherwise), json or console.",
        _choice("auto", "json", "console"),
    ),
    Setting("log.calls", True, "Write one log line per relayed call (at info level).", _bool),
    Setting(
        "shutdown.grace_period",
        30.0,
        "Seconds SIGTERM/SIGINT waits for calls in flight "
        "before ending them (each is still recorded) and flushing the ledger.",
        _positive_float,
    ),
)

SETTINGS_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}


LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]


# --- the typed view: one frozen object per section; code reads settings.relay.port ---------
# Field names are the keys' last parts; `_check_sections` proves every setting has its field.


@dataclass(frozen=True, slots=True)
class RelaySettings:
    host: str
    port: int
    header_timeout: float  # seconds, accept to the first request's headers complete
    body_timeout: float  # seconds, headers to the whole body, in all
    idle_timeout: float  # seconds a keep-alive connection may idle
    max_connections: int  # 0: derived from the open-file limit at start
    max_body_bytes_in_flight: int  # bytes, across every call
    max_scan_bytes: int  # bytes; see daemon.dialects.base.MAX_SCAN_BYTES


@dataclass(frozen=True, slots=True)
class AdminSettings:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class GrpcSettings:
    host: str
    port: int  # 0: no gRPC listener
    upstream: str  # scheme, host and port only: https (TLS) or http (plaintext)

    @property
    def target(self) -> str:
        """The upstream as a gRPC target, ``host:port`` (https: 443 unless given; http: 80)."""
        url = URL(self.upstream)
        host = f"[{url.host}]" if url.host and ":" in url.host else url.host
        return f"{host}:{url.port}"

    @property
    def tls(self) -> bool:
        """True when the upstream is reached over TLS (an https URL)."""
        return URL(self.upstream).scheme == "https"


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    base_url: str  # scheme, host and port only
    connect_timeout: float  # seconds
    read_timeout: float  # seconds
    max_connections: int
    price_multiplier: float  # token prices times this (1.1: US regional endpoint)

    @property
    def url(self) -> URL:
        return URL(self.base_url)


@dataclass(frozen=True, slots=True)
class UpstreamEntry:
    """One ``[upstreams.NAME]`` table: relayed under `prefix`, priced by overrides."""

    base_url: str
    prefix: str  # like "/openai"; apps use http://HOST:PORT/openai/v1
    provider: str  # metric label; "anthropic" sends the added key as x-api-key
    api_key_env: str  # "" for none
    price_multiplier: float = 1.0  # token prices times this (1.1: US regional endpoint)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    api_key_env: str


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    path: str
    url: str  # "": SQLite at path; else PostgreSQL (daemon.ledger.engine)
    instance: str  # "": the host name (daemon.ledger.engine.instance_name)
    salt_path: str  # "" : xai-meter.salt beside the ledger (daemon.salt.salt_file)
    batch_size: int  # rows
    flush_interval: float  # seconds
    retention_days: int  # 0: keep every call
    journal_path: str  # "": beside the ledger (<path>.journal)
    fsync_interval: float  # seconds; 0: never fsync the journal
    max_queue_rows: int  # rows in memory at most; the rest wait in the journal
    unhealthy_after: float  # seconds unable to write before /readyz says degraded


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    max_models: int
    apps: tuple[str, ...]
    max_apps: int
    max_keys: int


@dataclass(frozen=True, slots=True)
class PricingSettings:
    refresh: bool
    refresh_interval: float  # seconds
    api_key_env: str
    use_client_key: bool
    overrides: Mapping[str, Mapping[str, Any]]  # model -> {field: USD value}, checked


@dataclass(frozen=True, slots=True)
class ManagementSettings:
    api_key_env: str  # name of the env var with the management key; unset/empty: off
    base_url: str  # origin, no path
    team_id: str  # "": found via the validation endpoint
    refresh_interval: float  # seconds
    reconcile_hour_utc: int  # 0-23: the daily reconciliation runs after it
    reconcile_days: int  # complete UTC days pulled by it


@dataclass(frozen=True, slots=True)
class AlertsSettings:
    webhook_url: str  # "" for none


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: LogLevel
    format: LogFormat
    calls: bool


@dataclass(frozen=True, slots=True)
class ShutdownSettings:
    grace_period: float  # seconds


_SECTIONS: dict[str, type] = {
    "relay": RelaySettings,
    "admin": AdminSettings,
    "grpc": GrpcSettings,
    "upstream": UpstreamSettings,
    "auth": AuthSettings,
    "ledger": LedgerSettings,
    "metrics": MetricsSettings,
    "pricing": PricingSettings,
    "management": ManagementSettings,
    "alerts": AlertsSettings,
    "log": LogSettings,
    "shutdown": ShutdownSettings,
}


@dataclass(frozen=True, slots=True)
class Settings:
    """The daemon's settings, checked and typed: ``settings.relay.port``.

    `values` maps every dotted key to its value (what `check-config` prints and `replace`
    starts from); `source` is the file read, or None for the defaults.
    """

    relay: RelaySettings
    admin: AdminSettings
    grpc: GrpcSettings
    upstream: UpstreamSettings
    upstreams: Mapping[str, UpstreamEntry]
    auth: AuthSettings
    ledger: LedgerSettings
    metrics: MetricsSettings
    pricing: PricingSettings
    management: ManagementSettings
    alerts: AlertsSettings
    log: LogSettings
    shutdown: ShutdownSettings
    values: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any], source: str | None = None) -> Settings:
        """The typed view of checked values (every key of `SETTINGS` present)."""
        sections = {
            name: kind(
                **{
                    key.partition(".")[2]: v
                    for key, v in values.items()
                    if key.startswith(name + ".")
                }
            )
            for name, kind in _SECTIONS.items()
        }
        upstreams = {name: UpstreamEntry(**entry) for name, entry in values["upstreams"].items()}
        return cls(**sections, upstreams=MappingProxyType(upstreams), values=values, source=source)

    def replace(self, **overrides: Any) -> Settings:
        """A copy with some dotted keys changed (``replace(**{"relay.port": 0})``), checked."""
        return from_mapping(_nest({**self.values, **overrides}), source=self.source)


def _check_sections() -> None:
    """Every setting has exactly one typed field, and every field a setting (tests call this)."""
    declared = {s.key for s in SETTINGS}
    typed = {"upstreams"} | {
        f"{name}.{f.name}" for name, kind in _SECTIONS.items() for f in fields(kind)
    }
    if declared != typed:
        raise AssertionError(f"SETTINGS and the typed sections differ: {declared ^ typed}")


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys for nested tables; a table that is itself a setting stays whole."""
    flat: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and key not in SETTINGS_BY_KEY:
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def from_mapping(table: Mapping[str, Any], source: str | None = None) -> Settings:
    """Check a parsed TOML table against `SETTINGS`; unknown keys are errors, with a suggestion.

    Every mistake is found in one pass: unknown keys, wrong types and bad values, then the
    settings that cannot go together (`_cross_check`). Raises one `ConfigError` holding each
    mistake's line (`ConfigError.messages`), in the file's order."""
    values = {s.key: s.default for s in SETTINGS}
    errors: list[str] = []
    wrong: set[str] = set()  # keys whose own value is wrong: left out of the combinations
    for key, value in _flatten(table).items():
        setting = SETTINGS_BY_KEY.get(key)
        if setting is None:
            close = difflib.get_close_matches(key, SETTINGS_BY_KEY, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            errors.append(
                f"{key}: no such setting.{hint} Fix: remove it or correct its name "
                f"(config.example.toml lists every setting)."
            )
            continue
        try:
            values[key] = setting.check(key, value)
        except ConfigError as exc:
            errors.extend(exc.messages)
            wrong.add(key)
    errors += _cross_check(values, wrong)
    if errors:
        raise ConfigError(*errors)
    return Settings.of(values, source=source)


_LISTENERS = ("relay", "admin", "grpc")
_LISTEN_FLAGS = {"relay": "--port", "admin": "--admin-port", "grpc": "--grpc-port"}
# What port 0 means for each listener, in the clash's fix: gRPC's 0 turns the listener off.
_PORT_ZERO = {"relay": "any free port", "admin": "any free port", "grpc": "no gRPC listener"}
_LISTENER_NAMES = {"relay": "relay", "grpc": "gRPC"}


def _cross_check(values: Mapping[str, Any], wrong: set[str]) -> list[str]:
    """Settings each right alone that cannot go together: two listeners on one address (a
    wildcard host, ``0.0.0.0`` or ``::``, takes the port on every address), an upstream that
    is a listener of this daemon (every call would come back to it, forever: `_self_loops`).
    A setting in `wrong` (its own value was refused, so `values` holds its default) takes no
    part."""
    errors: list[str] = []
    taken: list[tuple[str, str, int]] = []  # (listener, host, port)
    for name in _LISTENERS:
        host, port = values[f"{name}.host"], values[f"{name}.port"]
        if port == 0 or {f"{name}.host", f"{name}.port"} & wrong:
            continue  # 0: any free port, or (gRPC) none: never a clash
        for other, other_host, other_port in taken:
            if other_port != port or not _overlap(host, other_host):
                continue
            where = (
                f"on the same host ({host})"
                if host == other_host
                else f"and {other}.host = {other_host!r} and {name}.host = {host!r} overlap "
                f"(0.0.0.0 and :: take the port on every address)"
            )
            errors.append(
                f"{name}.port = {port}: {other}.port is {port} too, {where}. Fix: give each "
                f"listener its own port ({_LISTEN_FLAGS[name]} N), or 0 for {_PORT_ZERO[name]}."
            )
            break
        taken.append((name, host, port))
    return errors + _self_loops(values, wrong)


def _overlap(a: str, b: str) -> bool:
    """Listeners on hosts `a` and `b` cannot share a port: the same host, or a wildcard and
    any host (``0.0.0.0`` and an IPv6 address excepted: IPv4's wildcard leaves those free)."""
    if a == b:
        return True
    for wild, other in ((a, b), (b, a)):
        if wild == "0.0.0.0":
            return ":" not in other
        if is_wildcard(wild):
            return True
    return False


def _self_loops(values: Mapping[str, Any], wrong: set[str]) -> list[str]:
    """An upstream that is a listener of this daemon: each ``base_url`` of an HTTP upstream
    against the relay, ``grpc.upstream`` against the gRPC listener (every call would be
    relayed back to it, until sockets run out), ``management.base_url`` against the relay
    (management calls would be relayed as inference calls). Host names resolve only when the
    ports are equal (`daemon.loops.own_address`)."""
    errors: list[str] = []
    checks: list[tuple[str, str, str]] = []  # (setting, its URL, the listener it must not be)
    checks += [("upstream.base_url", values["upstream.base_url"], "relay")]
    checks += [
        (f"upstreams.{name}.base_url", entry["base_url"], "relay")
        for name, entry in values["upstreams"].items()
    ]
    checks += [("grpc.upstream", values["grpc.upstream"], "grpc")]
    checks += [("management.base_url", values["management.base_url"], "relay")]
    for key, origin, listener in checks:
        host, port = values[f"{listener}.host"], values[f"{listener}.port"]
        if key in wrong or not port or {f"{listener}.host", f"{listener}.port"} & wrong:
            continue  # port 0: any free port (or no gRPC listener), never the upstream's
        url = URL(origin)
        if url.port != port or not url.host or not own_address(url.host, host):
            continue
        flag = {"upstream.base_url": " (--upstream)", "grpc.upstream": " (--grpc-upstream)"}
        if key == "management.base_url":
            what = "management calls would be relayed to upstream.base_url as inference calls"
            real = "https://management-api.x.ai"
        else:
            what = "every call would be relayed back to it, forever"
            real = "https://api.x.ai"
        errors.append(
            f"{key} = {origin!r} is this daemon's own {_LISTENER_NAMES[listener]} listener "
            f"({listener}.host = "
            f"{host!r}, {listener}.port = {port}): {what}. Fix: set {key}{flag.get(key, '')} "
            f'to the real upstream ("{real}"), or move the listener '
            f"({_LISTEN_FLAGS[listener]} N)."
        )
    return errors


def load(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the config file at `path`; with no path, use the defaults (zero config)."""
    if path is None:
        return from_mapping({})
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {p} does not exist. Fix: create it from "
            f"config.example.toml, or leave out --config."
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"config file {p} cannot be read: {exc.strerror}. Fix: make it a file this user "
            f"can read, or pass another with --config."
        ) from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config file {p} is not valid TOML: {exc}. Fix: correct that line "
            f"(config.example.toml shows every setting written right)."
        ) from None
    return from_mapping(table, source=str(p))


def example_toml() -> str:
    """The commented example config, generated from `SETTINGS` (config.example.toml)."""
    lines = [
        "# xai-meter configuration. Every setting is shown with its default; all are optional.",
        "# Run `xai-meter serve --config FILE`; `xai-meter check-config FILE` checks one.",
    ]
    section = None
    for s in SETTINGS:
        head, _, name = s.key.rpartition(".")
        if head != section:
            lines += ["", f"[{head}]"] if head else [""]
            section = head
        for chunk in _wrap(s.help):
            lines.append(f"# {chunk}")
        if isinstance(s.default, dict):  # a table: shown as a commented example
            lines += TABLE_EXAMPLES[s.key]
            continue
        lines.append(f"{name} = {_toml_value(s.default)}")
    return "\n".join(lines) + "\n"


TABLE_EXAMPLES = {
    "upstreams": [
        "# [upstreams.openai]",
        '# base_url = "https://api.openai.com"',
        '# prefix = "/openai"',
        "# [upstreams.anthropic]",
        '# base_url = "https://api.anthropic.com"',
        '# prefix = "/anthropic"',
    ],
    "pricing.overrides": [
        '# [pricing.overrides."gpt-4o"]',
        "# input = 2.5",
        "# cached_input = 1.25",
        "# output = 10.0",
        "# [pricing.overrides.catalog]",
        '# "tts" = 4.20                              # USD per 1M characters',
        '# "video:grok-imagine-video:720p" = 0.07   # USD per second',
        '# "batch_discount" = 0.5                   # the fraction taken off',
    ],
}


def to_toml(settings: Settings) -> str:
    """Every setting's effective value as a TOML document (`xai-meter check-config`): what
    `load` reads back to the same `Settings.values`. Sections in `SETTINGS`' order; the tables
    (``[upstreams.NAME]``, ``[pricing.overrides."MODEL"]``) under their own headers."""
    lines: list[str] = []
    section = None
    tables: list[tuple[str, Mapping[str, Any]]] = []

    def close_section() -> None:
        for key, table in tables:
            dotted = ".".join(_toml_key(part) for part in key.split("."))
            lines.extend(_toml_table(dotted, table) if table else ())
        tables.clear()

    for s in SETTINGS:
        head, _, name = s.key.rpartition(".")
        value = settings.values[s.key]
        if head != section:
            close_section()
            section = head
            if head:
                lines += ["", f"[{head}]"]
        if isinstance(value, Mapping):
            tables.append((s.key, value))
        else:
            lines.append(f"{_toml_key(name)} = {_toml_value(value)}")
    close_section()
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_table(dotted: str, table: Mapping[str, Any]) -> list[str]:
    """``[dotted]`` with its plain values, then each sub-table under its own header."""
    plain = [(k, v) for k, v in table.items() if not isinstance(v, Mapping)]
    nested = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    lines = ["", f"[{dotted}]"] if plain or not nested else []
    lines += [f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in plain]
    for key, sub in nested:
        lines += _toml_table(f"{dotted}.{_toml_key(str(key))}", sub)
    return lines


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # TOML's basic string: \\ and " escaped, and every control character but tab
        return '"' + _TOML_ESCAPES.sub(_toml_escape, value) + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    return repr(value)  # int, float (repr reads back exactly; inf and nan are TOML too)


_TOML_ESCAPES = re.compile(r'["\\\x00-\x08\x0a-\x1f\x7f]')


def _toml_escape(match: re.Match[str]) -> str:
    char = match.group()
    return "\\" + char if char in '"\\' else f"\\u{ord(char):04x}"


def _wrap(text: str, width: int = 96) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    if line:
        lines.append(line)
    return lines
