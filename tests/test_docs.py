"""The docs cannot go stale: every setting and every metric is in the README."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from daemon.config import SETTINGS
from daemon.metrics import Metrics

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
