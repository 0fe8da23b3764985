from __future__ import annotations

import tomllib
from fractions import Fraction
from pathlib import Path

import pytest

from daemon import config
from daemon.app import upstreams_of
from daemon.cli import main


def test_zero_config_defaults() -> None:
    s = config.load(None)
    assert s.relay.host == "127.0.0.1" and s.relay.port == 8787
    assert s.admin.host == "127.0.0.1" and s.admin.port == 9787
    assert str(s.upstream.url) == "https://api.x.ai"
    assert s.ledger.path == "xai-meter.db"
    assert s.upstreams == {} and s.metrics.apps == () and s.log.level == "info"


def test_every_setting_has_one_typed_field() -> None:
    config._check_sections()


def test_typed_settings_are_frozen_and_follow_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[relay]\nport = 9000\n[ledger]\nbatch_size = 7\n"
        "[upstreams.openai]\nbase_url = 'https://api.openai.com'\nprefix = '/openai'\n"
    )
    s = config.load(path)
    assert s.relay.port == 9000 and s.ledger.batch_size == 7
    assert s.upstreams["openai"] == config.UpstreamEntry(
        base_url="https://api.openai.com", prefix="/openai", provider="openai", api_key_env=""
    )
    with pytest.raises(AttributeError):
        s.relay.port = 1  # type: ignore[misc]
    assert s.replace(**{"relay.port": 0}).relay.port == 0 and s.relay.port == 9000


def test_example_config_is_generated_from_the_settings_table() -> None:
    example = (Path(__file__).parent.parent / "config.example.toml").read_text()
    assert example == config.example_toml(), "run: xai-meter example-config > config.example.toml"
    assert (
        config.load(Path(__file__).parent.parent / "config.example.toml").values
        == config.load(None).values
    )


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[relay]\nport = 'x'\n", ["relay.port", "whole number"]),
        ("[relay]\nport = 70000\n", ["relay.port", "0 to 65535"]),
        ("[relay]\nprot = 1\n", ["relay.prot", "Did you mean relay.port?"]),
        ("[upstream]\nbase_url = 'ftp://x'\n", ["upstream.base_url", "http(s) URL"]),
        (
            "[upstream]\nbase_url = 'https://api.x.ai/v1'\n",
            ["upstream.base_url", "https://api.x.ai"],
        ),
        ("[auth]\napi_key_env = 'xai-abc-123'\n", ["auth.api_key_env", "name"]),
        ("[log]\nlevel = 'loud'\n", ["log.level", "'debug'"]),
        ("[shutdown]\ngrace_period = -1\n", ["shutdown.grace_period", "greater than 0"]),
        ("[relay\n", ["not valid TOML"]),
        ("[upstream]\nprice_multiplier = 0\n", ["upstream.price_multiplier", "Fix:", "1.1"]),
        ("[upstream]\nprice_multiplier = '1.1'\n", ["upstream.price_multiplier", "Fix:"]),
        ("[upstream]\nprice_multiplier = true\n", ["upstream.price_multiplier", "Fix:"]),
        (
            "[upstreams.us]\nbase_url = 'https://us.api.x.ai'\nprefix = '/us'\n"
            "price_multiplier = -1.1\n",
            ["upstreams.us.price_multiplier", "Fix:"],
        ),
    ],
)
def test_bad_config_names_the_key_and_the_fix(tmp_path: Path, text: str, names: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    for name in names:
        assert name in str(err.value)


def test_price_multiplier_per_upstream(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[upstream]\nprice_multiplier = 1.1\n"
        "[upstreams.us]\nbase_url = 'https://us.api.x.ai'\nprefix = '/us'\n"
        "price_multiplier = 1.1\n"
        "[upstreams.plain]\nbase_url = 'https://api.x.ai'\nprefix = '/plain'\n"
    )
    s = config.load(path)
    assert config.load(None).upstream.price_multiplier == 1.0
    assert s.upstream.price_multiplier == 1.1
    assert (s.upstreams["us"].price_multiplier, s.upstreams["plain"].price_multiplier) == (1.1, 1.0)
    multipliers = {u.prefix: u.price_multiplier for u in upstreams_of(s, None)}
    assert multipliers == {"": Fraction(11, 10), "/us": Fraction(11, 10), "/plain": None}


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


def test_serve_with_bad_config_fails_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[relay]\nport = 'x'\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert "relay.port" in capsys.readouterr().err


def test_forced_key_env_must_be_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XAI_METER_TEST_KEY", raising=False)
    path = tmp_path / "c.toml"
    path.write_text("[auth]\napi_key_env = 'XAI_METER_TEST_KEY'\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert "XAI_METER_TEST_KEY" in capsys.readouterr().err


GOOD = """\
[relay]
port = 9001
[metrics]
apps = ["checkout", "say \\"hi\\"\\ttab\\u0001"]
[upstreams.openai]
base_url = "https://api.openai.com/"
prefix = "/openai/"
[pricing.overrides."grok-4.3-mini.x"]
input = 2.5
output = 10.0
aliases = ["mini"]
[pricing.overrides.catalog]
"video:grok-imagine-video:720p" = 0.07
"""


def test_check_config_prints_toml_that_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(GOOD)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    first, _, body = out.partition("\n")
    assert first == f"# {path}: OK. Every setting's effective value:"
    # TOML that reads back to the same settings, every one of them written out
    assert config.from_mapping(tomllib.loads(out)).values == config.load(path).values
    assert '[pricing.overrides."grok-4.3-mini.x"]\ninput = 2.5\n' in body
    assert '[upstreams.openai]\nbase_url = "https://api.openai.com"\nprefix = "/openai"\n' in body
    assert 'apps = ["checkout", "say \\"hi\\"\ttab\\u0001"]\n' in body
    assert "\nport = 9001\n" in body and "\ngrace_period = 30.0\n" in body
    plain = [s.key for s in config.SETTINGS if not isinstance(s.default, dict)]
    assert all(f"\n{key.rpartition('.')[2]} = " in body for key in plain)
    effective = tmp_path / "effective.toml"
    effective.write_text(out)
    assert main(["check-config", str(effective)]) == 0  # check-config accepts its own output
    assert capsys.readouterr().out == f"# {effective}: OK. Every setting's effective value:\n{body}"


BAD = """\
[relay]
port = "x"
hots = "1"
[admin]
port = 9000
[grpc]
port = 9000
[upstream]
base_url = "ftp://a"
[upstreams.a]
base_url = "nope"
prefix = "v1"
extra = 1
[upstreams.b]
prefix = "/b"
[log]
level = "loud"
"""

E = "xai-meter: config error: "


def test_check_config_reports_every_mistake_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{E}relay.port = 'x': expected a whole number from 0 to 65535. Fix: set relay.port to "
        "such a number, or remove it to use the default.",
        f"{E}relay.hots: no such setting. Did you mean relay.host? Fix: remove it or correct its "
        "name (config.example.toml lists every setting).",
        f"{E}upstream.base_url = 'ftp://a': expected an http(s) URL with a host, like "
        '"https://api.x.ai". Fix: give the upstream\'s base URL without the /v1 path.',
        f"{E}upstreams.a.extra: no such setting. Fix: remove it; an upstream takes base_url, "
        "prefix, provider, api_key_env, price_multiplier.",
        f"{E}upstreams.a.base_url = 'nope': expected an http(s) URL with a host, like "
        '"https://api.x.ai". Fix: give the upstream\'s base URL without the /v1 path.',
        f"{E}upstreams.a.prefix = 'v1': expected a path of lower case letters, digits, . _ - "
        'segments, not /v1. Fix: upstreams.a.prefix = "/openai" (for example).',
        f"{E}upstreams.b.base_url is missing. Fix: for example base_url = "
        '"https://api.openai.com", prefix = "/openai" (apps then use '
        "http://127.0.0.1:8787/openai/v1).",
        f"{E}log.level = 'loud': expected one of 'debug', 'info', 'warning', 'error'. "
        'Fix: log.level = "debug" (for example), or remove it to use the default.',
        f"{E}grpc.port = 9000: admin.port is 9000 too, on the same host (127.0.0.1). Fix: give "
        "each listener its own port (--grpc-port N), or 0 for no gRPC listener.",
    ]
    assert main(["serve", "--config", str(path)]) == 2  # serve says the same, every line
    assert capsys.readouterr().err == err


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        (  # a port refused alone takes no part in a clash (its default would be blamed)
            "[relay]\nport = 8787.5\n[grpc]\nport = 8787\n",
            ["relay.port = 8787.5: expected a whole number"],
        ),
        (
            "[relay]\nport = 8000\n[upstream]\nbase_url = 'http://127.0.0.1:8000'\n"
            "[upstreams.again]\nbase_url = 'http://127.0.0.1:8000'\nprefix = '/again'\n",
            [
                "upstream.base_url = 'http://127.0.0.1:8000' is this daemon's own relay listener "
                "(relay.host = '127.0.0.1', relay.port = 8000): every call would be relayed back "
                "to it, forever. Fix: set upstream.base_url (--upstream) to the real upstream "
                '("https://api.x.ai"), or move the listener (--port N).',
                "upstreams.again.base_url = 'http://127.0.0.1:8000' is this daemon's own relay",
            ],
        ),
        (  # any name or address that reaches the listener, not only its own spelling
            "[relay]\nhost = '0.0.0.0'\nport = 8000\n[upstream]\n"
            "base_url = 'http://localhost:8000'\n[upstreams.b]\n"
            "base_url = 'http://127.0.0.9:8000'\nprefix = '/b'\n[upstreams.c]\n"
            "base_url = 'http://0.0.0.0:8000'\nprefix = '/c'\n",
            [
                "upstream.base_url = 'http://localhost:8000' is this daemon's own relay",
                "upstreams.b.base_url = 'http://127.0.0.9:8000' is this daemon's own relay",
                "upstreams.c.base_url = 'http://0.0.0.0:8000' is this daemon's own relay",
            ],
        ),
        (
            "[relay]\nhost = '::'\nport = 8000\n[upstream]\nbase_url = 'http://[::1]:8000'\n",
            ["upstream.base_url = 'http://[::1]:8000' is this daemon's own relay listener"],
        ),
        (
            "[grpc]\nport = 8790\nupstream = 'http://localhost:8790'\n"
            "[management]\nbase_url = 'http://localhost:8787'\n",
            [
                "grpc.upstream = 'http://localhost:8790' is this daemon's own gRPC listener "
                "(grpc.host = '127.0.0.1', grpc.port = 8790): every call would be relayed back "
                "to it, forever. Fix: set grpc.upstream (--grpc-upstream) to the real upstream "
                '("https://api.x.ai"), or move the listener (--grpc-port N).',
                "management.base_url = 'http://localhost:8787' is this daemon's own relay "
                "listener (relay.host = '127.0.0.1', relay.port = 8787): management calls would "
                "be relayed to upstream.base_url as inference calls. Fix: set management.base_url "
                'to the real upstream ("https://management-api.x.ai"), or move the listener '
                "(--port N).",
            ],
        ),
        (  # not the listener: another loopback address than it listens on, another port, a
            # name that does not resolve
            "[relay]\nport = 8000\n[upstream]\nbase_url = 'http://127.0.0.9:8000'\n"
            "[upstreams.b]\nbase_url = 'http://localhost:8001'\nprefix = '/b'\n"
            "[upstreams.c]\nbase_url = 'http://no-such-host.invalid:8000'\nprefix = '/c'\n",
            [],
        ),
        (  # a wildcard host takes the port on every address: a clash with any other host
            "[relay]\nport = 18797\n[admin]\nhost = '0.0.0.0'\nport = 18797\n"
            "[grpc]\nhost = '::'\nport = 18797\n",
            [
                "admin.port = 18797: relay.port is 18797 too, and relay.host = '127.0.0.1' and "
                "admin.host = '0.0.0.0' overlap (0.0.0.0 and :: take the port on every address). "
                "Fix: give each listener its own port (--admin-port N), or 0 for any free port.",
                "grpc.port = 18797: relay.port is 18797 too, and relay.host = '127.0.0.1' and "
                "grpc.host = '::' overlap (0.0.0.0 and :: take the port on every address). "
                "Fix: give each listener its own port (--grpc-port N), or 0 for no gRPC listener.",
            ],
        ),
        (  # IPv4's wildcard leaves an IPv6 address's port free
            "[relay]\nhost = '0.0.0.0'\nport = 18797\n[admin]\nhost = '::1'\nport = 18797\n",
            [],
        ),
        (  # port 0 is any free port: never a clash, never the upstream's
            "[relay]\nport = 0\n[admin]\nport = 0\n[upstream]\nbase_url = 'http://127.0.0.1:0'\n",
            [],
        ),
    ],
)
def test_settings_that_cannot_go_together(tmp_path: Path, text: str, lines: list[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    if not lines:
        config.load(path)
        return
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert len(err.value.messages) == len(lines)
    for message, start in zip(err.value.messages, lines, strict=True):
        assert message.startswith(start), message
