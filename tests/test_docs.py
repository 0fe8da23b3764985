"""The docs cannot go stale: every setting and every metric is in the README, its snippets
import what they use and run, its base URLs are the defaults, the simulator's fault headers
are in its table."""

from __future__ import annotations

import ast
import asyncio
import builtins
import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from daemon import simulator
from daemon.app import Daemon
from daemon.config import SETTINGS
from daemon.ledger import open_database
from daemon.ledger.store import all_calls
from daemon.metrics import Metrics
from daemon.testing import make_settings

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def exported_names() -> set[str]:
    registry = CollectorRegistry()
    Metrics(registry)
    names = set()
    for family in registry.collect():
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        names.add(family.name + suffix)
    return names


def test_every_setting_is_documented() -> None:
    missing = [s.key for s in SETTINGS if f"`{s.key}`" not in README]
    assert not missing, f"settings missing from README.md: {missing}"


def test_every_metric_is_documented() -> None:
    missing = sorted(n for n in exported_names() if f"`{n}`" not in README)
    assert not missing, f"metrics missing from README.md: {missing}"


def test_readme_first_screen_has_the_two_commands() -> None:
    first = README.split("---", 1)[0]
    assert "pip install . && xai-meter serve" in first
    assert "pip install -e '.[test]' && python -m pytest" in first
    assert "pip install -e '.[test]' && python -m pytest" in (ROOT / ".ci/run").read_text()


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "daemon", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    for command in ("serve", "demo", "simulate", "check-config", "example-config"):
        assert command in out


def test_every_dashboard_panel_is_described_in_the_readme() -> None:
    import json

    titles = []
    for path in sorted((ROOT / "dashboards" / "grafana").glob("*.json")):
        stack = list(json.loads(path.read_text())["panels"])
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            if panel.get("type") != "row":
                titles.append(panel["title"])
    missing = [t for t in titles if f"**{t}**" not in README]
    assert titles and not missing, f"panels missing from README.md: {missing}"


# --- issue 14: the README a new user reads first ----------------------------------------


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.DOTALL)


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_first_commands_make_a_venv() -> None:
    first = README.split("---", 1)[0]
    block = first.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0].startswith("python -m venv .venv && . .venv/bin/activate ")
    assert block[1].startswith("pip install . && xai-meter serve")


def test_the_base_urls_are_stated_and_are_the_defaults() -> None:
    defaults = {s.key: s.default for s in SETTINGS}
    relay = f"http://{defaults['relay.host']}:{defaults['relay.port']}"
    grpc = f"{defaults['grpc.host']}:{defaults['grpc.port']}"
    where = section("Point your app at it")
    assert f"| base URL | `{relay}/v1` |" in where  # OpenAI-compatible: with /v1
    assert f"| base URL | `{relay}`, **no `/v1`**: the SDK adds `/v1/messages` itself |" in where
    assert f"| `api_host` | `{grpc}`, with `use_insecure_channel=True`" in where
    assert f'Anthropic(base_url="{relay}",' in where
    assert f'api_host="{grpc}", use_insecure_channel=True' in where


def test_every_python_snippet_compiles_and_imports_what_it_uses() -> None:
    snippets = python_snippets()
    assert len(snippets) >= 4
    for code in snippets:
        tree = ast.parse(code)  # a SyntaxError fails the test, naming the line
        bound = set(dir(builtins))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                bound.add(node.name)
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert not used - bound, f"names used but never imported or set: {used - bound}\n{code}"


async def test_the_python_snippets_run_against_the_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every Python snippet, as written but for the addresses (the test's free ports), runs
    against a daemon relaying to the simulator, and each call it makes is one ledger row."""
    sim = await simulator.start()
    face = await simulator.start_grpc(state=sim.state)
    settings = make_settings(tmp_path, sim.url, grpc__upstream=face.url)
    daemon = Daemon(settings, grpc_any_port=True)
    await daemon.start()
    monkeypatch.setenv("XAI_API_KEY", "xai-readme-key")
    try:
        printed = io.StringIO()
        for code in python_snippets():
            code = code.replace("http://127.0.0.1:8787", daemon.relay_url)
            code = code.replace("127.0.0.1:8790", daemon.grpc_address)
            with contextlib.redirect_stdout(printed):
                # in a thread: the SDKs' sync clients block, the daemon serves from this loop
                await asyncio.to_thread(exec, compile(code, "README.md", "exec"), {})
        async with asyncio.timeout(10):
            await daemon.ledger.wait_written(4)
        await daemon.ledger.drained()
    finally:
        await daemon.stop()
        await face.close()
        await sim.close()
    db = open_database(settings.ledger.path, readonly=True)
    try:
        rows = all_calls(db)
    finally:
        db.close()
    assert [(r["transport"], r["endpoint"], r["model"], r["status"]) for r in rows] == [
        ("http", "chat.completions", "grok-4.3", 200),
        ("http", "messages", "grok-4.3", 200),
        ("grpc", "chat.completions", "grok-4.3", 200),
        ("grpc", "chat.completions", "grok-4.3", 200),
    ]
    assert all(r["metered"] == 1 for r in rows)
    # xAI's reported cost (Messages reports none, and this daemon fetches no prices)
    assert [r["cost_ticks"] for r in rows] == [1_562_500, None, 1_478_500, 1_375_000]
    assert printed.getvalue().count("\n") == 4


def test_the_simulator_fault_headers_are_a_table() -> None:
    """Each X-Sim-* header the simulator reads has a row: header, effect, example."""
    headers = set()
    for path in (ROOT / "daemon" / "simulator").glob("*.py"):
        headers |= set(re.findall(r'"(X-Sim-[A-Za-z-]+)"', path.read_text()))
    assert len(headers) >= 20
    rows = {
        line.split("|")[1].strip(" `"): line
        for line in section("Simulator and demo").splitlines()
        if line.startswith("| `X-Sim-")
    }
    assert sorted(headers - rows.keys()) == [], "X-Sim headers missing from the README's table"
    for header, line in rows.items():
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 3 and cells[1], line
        assert cells[2].lower().startswith(f"`{header.lower()}: "), line  # an example


def test_the_wal_and_how_to_copy_the_ledger() -> None:
    ledger = section("The ledger")
    assert "### Copying the ledger: `xai-meter backup`, not `cp`" in ledger
    assert 'sqlite3 xai-meter.db ".backup copy.db"' in ledger
    assert "xai-meter backup copy.db" in ledger
    assert "WAL" in ledger


def test_every_link_inside_the_readme_names_a_heading() -> None:
    def anchor(heading: str) -> str:
        text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
        return text.replace(" ", "-")

    anchors = {anchor(h) for h in re.findall(r"^#+ (.+)$", README, re.MULTILINE)}
    links = set(re.findall(r"\]\(#([\w-]+)\)", README))
    assert links and not links - anchors, f"links to no heading: {sorted(links - anchors)}"
