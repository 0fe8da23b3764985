from __future__ import annotations

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


def test_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.toml"
    path.write_text("[relay]\nport = 9000\n")
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "relay.port = 9000" in out and "OK" in out
