"""What the tests share: factories for records and usage, a daemon run in the test's loop, and
readers of the monitoring files in dashboards/ (dashboards, rules, alerts).

Kept in the package, not in `tests/`, so that no test module imports another: pytest's
`conftest.py` injects the fixtures, and test modules import these names from here. Nothing in
the daemon imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from daemon import config
from daemon.app import Daemon
from daemon.ledger.schema import open_database
from daemon.ledger.store import all_calls
from daemon.record import CallRecord

TEST_KEY = "xai-test-key-0123456789abcdef"

# The real grok-4-fast-reasoning chat usage sample of xai-api.md ("usage" of a chat completion):
# reasoning tokens sit outside completion_tokens, and the upstream reports its own cost.
XAI_CHAT_USAGE: dict[str, Any] = {
    "prompt_tokens": 165,
    "completion_tokens": 2,
    "total_tokens": 292,
    "prompt_tokens_details": {
        "text_tokens": 165,
        "audio_tokens": 0,
        "image_tokens": 0,
        "cached_tokens": 156,
    },
    "completion_tokens_details": {
        "reasoning_tokens": 125,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
    "num_sources_used": 0,
    "cost_in_usd_ticks": 731000,
}


# A user turn for the simulator tests.
USER_MESSAGES: list[dict[str, str]] = [
    {"role": "user", "content": "How many tokens does a metering relay count?"}
]


def cost_by_hand(
    p_in: int, p_cached: int, p_out: int, prompt: int, cached: int, output: int
) -> int:
    """xai-api.md's token formula written out, independent of any price code: ticks for
    `prompt` input tokens of which `cached` were cached, and `output` output tokens."""
    return (prompt - cached) * p_in + cached * p_cached + output * p_out


def sse_payloads(raw: bytes) -> list[str]:
    """The ``data:`` payloads of an LF-framed SSE body, in order."""
    return [
        line[6:].decode()
        for frame in raw.split(b"\n\n")
        for line in frame.split(b"\n")
        if line.startswith(b"data: ")
    ]


def make_record(**fields: Any) -> CallRecord:
    """A finished-looking chat completion record (200, billable); `fields` override any field."""
    base: dict[str, Any] = {
        "id": "t",
        "started_at": 0.0,
        "t0": 0.0,
        "provider": "xai",
        "endpoint": "chat.completions",
        "method": "POST",
        "path": "/v1/chat/completions",
        "billable": True,
        "status": 200,
    }
    return CallRecord(**{**base, **fields})


def stream_cut_errors() -> tuple[type[BaseException], ...]:
    """What the openai SDK raises while reading a stream the server cut short: its own
    `APIError` on newer releases, httpx's `RemoteProtocolError` on older ones (our floor, whose
    transport is httpx; newer ones may not install httpx at all)."""
    import openai

    errors: list[type[BaseException]] = [openai.APIError]
    with contextlib.suppress(ImportError):
        errors.append(importlib.import_module("httpx").RemoteProtocolError)
    return tuple(errors)


def make_settings(tmp_path: Path, upstream: str, **extra: Any) -> config.Settings:
    """Settings for a daemon under test: OS-chosen loopback ports, a ledger in `tmp_path`,
    short timeouts, no price refresh. `extra` sets more keys, sections joined by ``__``
    (``ledger__batch_size=1``)."""
    table: dict[str, Any] = {
        "relay": {"port": 0},
        "admin": {"port": 0},
        # No gRPC listener unless a test asks for one (`Daemon(grpc_any_port=True)`).
        "grpc": {"port": 0},
        "upstream": {"base_url": upstream, "connect_timeout": 2, "read_timeout": 5},
        "ledger": {"path": str(tmp_path / "ledger.db"), "flush_interval": 0.0},
        "shutdown": {"grace_period": 2},
        # Off unless a test is about prices: listing fetches would interleave with the
        # requests other tests inspect on the simulator.
        "pricing": {"refresh": False},
    }
    for dotted, value in extra.items():
        *sections, key = dotted.split("__")
        node = table
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = value
    return config.from_mapping(table)


class RunningDaemon:
    """A daemon started in the test's loop, with helpers to read what it recorded."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.registry: CollectorRegistry = daemon.registry

    @property
    def base_url(self) -> str:
        return self.daemon.relay_url + "/v1"

    @property
    def url(self) -> str:
        return self.daemon.relay_url

    @property
    def grpc_address(self) -> str:
        """``host:port`` of its gRPC listener (xai-sdk's ``api_host``); "" when it has none."""
        return self.daemon.grpc_address

    @property
    def admin_url(self) -> str:
        return self.daemon.admin_url

    @property
    def ledger_path(self) -> str:
        return self.daemon.settings.ledger.path

    async def rows(self, count: int, within: float = 5.0) -> list[dict[str, Any]]:
        """All ledger rows, once at least `count` have been written (awaits; never sleeps)."""
        async with asyncio.timeout(within):
            await self.daemon.ledger.wait_written(count)
        db = open_database(self.ledger_path, readonly=True)
        try:
            return all_calls(db)
        finally:
            db.close()

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


DaemonFactory = Callable[..., Awaitable[RunningDaemon]]


# --- the monitoring files (dashboards/): what the dashboard and Prometheus tests read -------

ROOT = Path(__file__).parent.parent  # the repository (tests run from a clone)
DASHBOARDS = ROOT / "dashboards"
RULE_FILES = sorted((DASHBOARDS / "rules").glob("*.yml"))
UNIT_TESTS = sorted((DASHBOARDS / "tests").glob("*.yaml"))
JSON_FILES = sorted((DASHBOARDS / "grafana").glob("*.json"))
RUNBOOK = DASHBOARDS / "RUNBOOK.md"
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


def binary(name: str) -> str:
    """The path of a Prometheus binary; a loud skip without it, a failure in CI."""
    import pytest  # only the tests call this; the package does not depend on pytest

    path = shutil.which(name)
    if path is None:
        reason = (
            f"`{name}` is not installed (apt-get install prometheus): the dashboards, "
            "rules and alerts are NOT tested"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}, and CI must test them")
        pytest.skip(reason)
    return path


def load_yaml(path: Path) -> Any:
    import yaml  # type: ignore[import-untyped]  # a test extra, not a dependency of the daemon

    return yaml.safe_load(path.read_text())


def rules() -> Iterator[dict[str, Any]]:
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            yield from group["rules"]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def recordings() -> list[dict[str, Any]]:
    return [r for r in rules() if "record" in r]


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboard_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation and variable of a dashboard."""
    for panel in panels(board["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for annotation in board["annotations"]["list"]:
        if annotation.get("expr"):
            yield f"annotation {annotation['name']!r}", annotation["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            selector, _label = label_values(variable["query"])
            yield f"variable ${variable['name']}", selector


def label_values(query: str) -> tuple[str, str]:
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
    assert match, f"not a label_values(selector, label) query: {query}"
    return match.group(1), match.group(2)


def all_expressions() -> list[tuple[str, str]]:
    found = [
        (f"{path.name}: {where}", expr)
        for path in JSON_FILES
        for where, expr in dashboard_queries(json.loads(path.read_text()))
    ]
    found += [(f"record {r['record']}", r["expr"]) for r in recordings()]
    found += [(f"alert {r['alert']}", r["expr"]) for r in alerts()]
    return found


# --- a small PromQL reader: metric names, selectors' labels, grouping labels --------------------
