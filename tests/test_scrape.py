"""`xai-meter prometheus-config`: a scrape config that follows admin.port, checked by the real
promtool, and the checked-in template it agrees with."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from daemon import config
from daemon.cli import main
from daemon.scrape import admin_target, scrape_config
from daemon.testing import DASHBOARDS, RULE_FILES, binary


def generated(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["prometheus-config", *args]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


@pytest.mark.prometheus
def test_the_config_follows_admin_port_and_promtool_accepts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "my.toml"
    settings.write_text('[admin]\nhost = "0.0.0.0"\nport = 9911\n')
    text = generated(capsys, "--config", str(settings), "--scrape-interval", "30s")
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    result = subprocess.run(
        [binary("promtool"), "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout
    parsed = yaml.safe_load(text)
    assert parsed["global"] == {"scrape_interval": "30s", "evaluation_interval": "30s"}
    assert parsed["rule_files"] == [str(p.resolve()) for p in RULE_FILES]
    [job] = parsed["scrape_configs"]
    assert job == {
        "job_name": "xai-meter",
        "metrics_path": "/metrics",
        "static_configs": [{"targets": ["127.0.0.1:9911"]}],
    }


def test_the_template_is_the_config_of_the_default_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """dashboards/prometheus.yml differs from the generated config only in its rule paths
    (relative to itself, so a checkout can use it as it is)."""
    template = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
    made = yaml.safe_load(generated(capsys))
    assert [str((DASHBOARDS / p).resolve()) for p in sorted(template.pop("rule_files"))] == (
        made.pop("rule_files")
    )
    assert template == made
    assert made["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:9787"]}]


def test_admin_port_follows_the_flag_serve_was_started_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "my.toml"
    settings.write_text('[admin]\nhost = "0.0.0.0"\nport = 9911\n')
    text = generated(capsys, "--config", str(settings), "--admin-port", "9922")
    [job] = yaml.safe_load(text)["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9922"]}]
    [job] = yaml.safe_load(generated(capsys, "--admin-port", "9933"))["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9933"]}]


def test_targets_and_the_rules_directory() -> None:
    assert admin_target("127.0.0.1", 9787) == "127.0.0.1:9787"
    assert admin_target("::", 1) == "127.0.0.1:1"
    assert admin_target("::1", 9787) == "[::1]:9787"
    assert admin_target("10.0.0.5", 80) == "10.0.0.5:80"
    settings = config.from_mapping({"admin": {"host": "::1", "port": 9000}})
    text = scrape_config(settings, str(DASHBOARDS / "rules"), "1m30s")
    assert '      - targets: ["[::1]:9000"]   # admin.host:admin.port\n' in text
    assert "  scrape_interval: 1m30s\n" in text


@pytest.mark.parametrize(
    ("args", "toml", "message"),
    [
        (
            [],
            "[admin]\nport = 0\n",
            "admin.port = 0 picks a free port at each start, so no config can name it. "
            "Fix: set admin.port (or pass the --config FILE that sets it).",
        ),
        (
            ["--scrape-interval", "15"],
            "",
            "--scrape-interval '15' is not a Prometheus duration. Fix: a number and a unit, "
            "e.g. 15s, 1m, 1m30s.",
        ),
        (["--scrape-interval", "0s"], "", "--scrape-interval '0s' is not a Prometheus duration"),
        (["--rules-dir", "RULES"], "", "no xai-meter rule files (xai-meter-alerts.yml, "),
    ],
)
def test_errors_are_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    toml: str,
    message: str,
) -> None:
    settings = tmp_path / "c.toml"
    settings.write_text(toml)
    args = [str(tmp_path) if a == "RULES" else a for a in args]
    assert main(["prometheus-config", "--config", str(settings), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"xai-meter prometheus-config: {message}")
    assert captured.err.count("\n") == 1
