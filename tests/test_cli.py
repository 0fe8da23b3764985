"""The `xai-meter` command line: the default command, exit codes, help, and the README's table.

The commands' work on a real ledger (prices, report, fingerprints), a bad config at serve and
check-config, and the demo end to end are tested in test_prices_daemon.py, test_fingerprints.py,
test_config.py and test_demo.py; here the CLI's own behaviour.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from daemon import __version__, cli, config
from daemon.cli import command_table, main
from daemon.ledger import migrate, open_database

ROOT = Path(__file__).parent.parent


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple[config.Settings, str | None]]:
    """Run `serve` without serving: record the settings and key it would serve with."""
    seen: list[tuple[config.Settings, str | None]] = []

    async def fake_serve(
        settings: config.Settings, api_key: str | None, started: Callable[[], None]
    ) -> None:
        seen.append((settings, api_key))

    monkeypatch.setattr(cli, "_serve", fake_serve)
    monkeypatch.setattr(cli, "configure", lambda level, fmt, stream: None)
    monkeypatch.delenv(cli.CONFIG_ENV, raising=False)
    return seen


def test_readme_command_table_is_the_cli() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    start = readme.index("| command | what it does |")
    end = start
    while end < len(readme) and readme[end].startswith("|"):
        end += 1
    table = command_table()
    assert "\n".join(readme[start:end]) == table, (
        "README.md's command table differs from the CLI; replace it with:\n" + table
    )


def test_command_table_rows() -> None:
    rows = command_table().splitlines()[2:]
    assert [r.split()[2].rstrip("`") for r in rows] == [
        "serve",
        "demo",
        "simulate",
        "prices",
        "report",
        "fingerprints",
        "reconcile",
        "check-config",
        "example-config",
        "backup",
        "prometheus-config",
    ]
    assert rows[0].startswith(
        "| `xai-meter serve [--config FILE] [--port N] [--admin-port N] [--upstream URL] "
        "[--grpc-port N] [--grpc-upstream URL] [--ledger FILE\\|URL]` | run the relays (HTTP and "
        "gRPC) and the admin listener (also what plain "
    )
    assert "[--by model\\|app\\|key\\|day\\|endpoint]" in rows[4]
    assert "| `xai-meter reconcile [--config FILE] [--days N] [--ledger FILE\\|URL] " in rows[6]
    assert "| `xai-meter check-config FILE` |" in rows[7]


def test_plain_xai_meter_serves_with_defaults(served: list[Any]) -> None:
    assert main([]) == 0
    [(settings, api_key)] = served
    assert settings.values == config.load().values
    assert api_key is None


def test_serve_options_without_the_command_mean_serve(served: list[Any], tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[relay]\nport = 9000\n[admin]\nport = 9001\n")
    assert main(["--config", str(path)]) == 0
    assert main(["-c", str(path), "--port", "0", "--ledger", str(tmp_path / "l.db")]) == 0
    assert main(["serve", "--config", str(path), "--admin-port", "0"]) == 0
    first, second, third = (settings for settings, _ in served)
    assert (first.relay.port, first.admin.port) == (9000, 9001)
    assert (second.relay.port, second.admin.port) == (0, 9001)
    assert second.ledger.path == str(tmp_path / "l.db")
    assert (third.relay.port, third.admin.port) == (9000, 0)


def test_config_comes_from_the_environment(
    served: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[upstream]\nbase_url = 'http://127.0.0.1:1'\n")
    monkeypatch.setenv(cli.CONFIG_ENV, str(path))
    assert main(["--upstream", "http://127.0.0.1:2"]) == 0
    assert main([]) == 0
    assert [s.upstream.base_url for s, _ in served] == [
        "http://127.0.0.1:2",
        "http://127.0.0.1:1",
    ]


def test_bad_config_without_the_command_is_a_serve_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(cli.CONFIG_ENV, raising=False)
    path = tmp_path / "bad.toml"
    path.write_text("[relay]\nport = 'x'\n")
    assert main(["--config", str(path)]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("xai-meter: config error: ") and "relay.port" in err


def test_forced_key_reaches_serve(
    served: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XAI_METER_TEST_KEY", "xai-forced")
    path = tmp_path / "c.toml"
    path.write_text("[auth]\napi_key_env = 'XAI_METER_TEST_KEY'\n")
    assert main(["--config", str(path)]) == 0
    assert served[0][1] == "xai-forced"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bogus"], "xai-meter: No such command 'bogus'."),
        (["--bogus"], "xai-meter serve: No such option"),
        (["serve", "--port", "x"], "xai-meter serve: Invalid value for '--port'"),
        (["report", "--by", "nope"], "xai-meter report: Invalid value for '--by'"),
        (["prices", "--format", "xml"], "xai-meter prices: Invalid value for '--format'"),
        (["check-config"], "xai-meter check-config: Missing argument 'FILE'."),
        (["example-config", "extra"], "xai-meter example-config: Got unexpected extra argument"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    line = one_line(err)
    assert line.startswith(message), line
    assert "--help" in line


@pytest.mark.parametrize("command", ["prices", "report", "fingerprints"])
def test_missing_ledger_is_a_command_error(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--ledger", str(tmp_path / "none.db")]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"xai-meter {command}: no ledger at ")
    assert "--ledger FILE" in err


def test_the_readme_says_the_exit_codes_commands_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (
        "Other commands exit 0 when done; 2 when one cannot run as asked, a user's mistake said "
        "in one line with the fix (`report` without a ledger, a `--since` it cannot read, a "
        "`--ledger` that is no ledger, a config or usage error); 130 when Ctrl-C interrupts one."
    ) in readme
    assert "1 when one cannot run as asked" not in readme
    monkeypatch.chdir(tmp_path)  # no ledger here
    assert main(["report"]) == 2
    assert main(["report", "--since", "1M"]) == 2


def test_ledger_commands_on_an_empty_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.db"
    db = open_database(path)
    migrate(db)
    db.close()
    assert main(["prices", "--ledger", str(path)]) == 0
    assert capsys.readouterr().out.startswith("No prices yet.")
    assert main(["prices", "--ledger", str(path), "--format", "json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    assert main(["report", "--ledger", str(path), "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["rows"], body["total"]["calls"], body["total"]["cost_ticks"]) == ([], 0, 0)
    assert body["total"]["p50_ms"] is None and body["total"]["cached_share"] is None
    assert main(["fingerprints", "--ledger", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Fingerprints seen:\n") and "Changes (kind new:" in out


def test_ledger_comes_from_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[ledger]\npath = '{tmp_path / 'from-config.db'}'\n")
    assert main(["report", "--config", str(path)]) == 2
    assert "from-config.db" in capsys.readouterr().err


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # click wraps the help
    for default in ("[default: 24h]", "[default: model]", "[default: table]"):
        assert default in out
    assert "model|app|key|day|endpoint" in out and "$XAI_METER_CONFIG" in out
    assert main(["simulate", "-h"]) == 0
    out = capsys.readouterr().out
    assert "[default: 127.0.0.1]" in out and "[default: 8788]" in out
    assert "gRPC face, for xai-sdk (0: off) [default: 8791;" in " ".join(out.split())
    assert main(["demo", "--help"]) == 0
    assert "[default: xai-meter-demo.db]" in capsys.readouterr().out


def test_help_lists_commands_in_order_and_says_serve_is_the_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    names = ["serve", "demo", "simulate", "prices", "report", "fingerprints", "check-config"]
    positions = [out.index(f"  {name} ") for name in names]
    assert positions == sorted(positions)
    assert "runs serve" in out
    commands = out.split("Commands:", 1)[1]
    assert "..." not in commands  # each command's help whole, not cut short


def test_serve_help_is_serves_not_the_groups(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "1", "--help"]) == 0
    assert "Usage: xai-meter serve" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"xai-meter {__version__}\n"


def test_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["example-config"]) == 0
    assert capsys.readouterr().out == config.example_toml()


def test_check_config_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("xai-meter: config error: ") and "does not exist" in err


def test_simulate_and_demo_get_their_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon import demo, simulator

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(cli, "configure", lambda level, fmt: calls.append(("log", level)))
    monkeypatch.setattr(
        simulator, "run", lambda host, port, grpc: calls.append(("sim", host, port, grpc))
    )

    async def fake_demo(ledger: str, keep_running: bool = False, append: bool = False) -> None:
        calls.append(("demo", ledger, keep_running, append))

    monkeypatch.setattr(demo, "run_demo", fake_demo)
    assert main(["simulate"]) == 0
    assert main(["simulate", "--host", "0.0.0.0", "--port", "1", "--grpc-port", "0"]) == 0
    assert main(["demo"]) == 0
    assert main(["demo", "--ledger", "d.db", "--keep-running"]) == 0
    assert main(["demo", "--append"]) == 0
    assert calls == [
        ("log", "info"),
        ("sim", "127.0.0.1", 8788, 8791),
        ("log", "info"),
        ("sim", "0.0.0.0", 1, 0),
        ("log", "warning"),
        ("demo", "xai-meter-demo.db", False, False),
        ("log", "warning"),
        ("demo", "d.db", True, False),
        ("log", "warning"),
        ("demo", "xai-meter-demo.db", False, True),
    ]


def test_ctrl_c_exits_130_quietly(
    monkeypatch: pytest.MonkeyPatch, served: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(coro: Coroutine[Any, Any, None]) -> None:
        coro.close()
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    assert main([]) == 130
    assert capsys.readouterr().err == ""


def test_a_port_in_use_is_one_line_naming_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(
            ["serve", "--port", str(port), "--admin-port", "0", "--ledger", str(tmp_path / "l.db")]
        )
    err = capsys.readouterr().err
    assert code == 2
    # the daemon's own log lines (JSON) come first; the failure is one plain line, last
    *_, last = err.strip().splitlines()
    assert "Traceback" not in err and last.startswith("xai-meter: config error: relay.host")
    assert f"relay.port = {port}" in last and "--port N" in last


@pytest.mark.parametrize("command", ["prices", "report", "fingerprints", "reconcile"])
@pytest.mark.parametrize("kind", ["directory", "not sqlite"])
def test_a_ledger_that_is_not_one_is_one_line_and_exit_2(
    command: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ledger.db"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"not a database, just text\n" * 100)
    assert main([command, "--ledger", str(path)]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"xai-meter {command}: ")
    assert "--ledger FILE" in err
