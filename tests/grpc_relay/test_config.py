"""The [grpc] settings: defaults, one-line errors that name the setting and the fix, the flags."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from daemon import config
from daemon.cli import _settings, main


def test_defaults_and_targets() -> None:
    s = config.from_mapping({}).grpc
    assert (s.host, s.port, s.upstream, s.target, s.tls) == (
        "127.0.0.1",
        8790,
        "https://api.x.ai",
        "api.x.ai:443",
        True,
    )
    plain = config.from_mapping({"grpc": {"upstream": "http://[::1]:8791/"}}).grpc
    assert (plain.upstream, plain.target, plain.tls) == ("http://[::1]:8791", "[::1]:8791", False)
    assert config.from_mapping({"grpc": {"upstream": "https://us.api.x.ai:8443"}}).grpc.target == (
        "us.api.x.ai:8443"
    )


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"upstream": "api.x.ai:443"}, ["grpc.upstream", "https://HOST[:PORT]", "Fix:"]),
        ({"upstream": "grpcs://api.x.ai"}, ["grpc.upstream", "http://HOST:PORT"]),
        ({"upstream": "https://api.x.ai/v1"}, ["only scheme, host and port", '"https://api.x.ai"']),
        ({"port": 70000}, ["grpc.port", "0 to 65535"]),
        ({"port": "8790"}, ["grpc.port", "whole number"]),
        ({"host": ""}, ["grpc.host", "host name or IP address"]),
        ({"prot": 1}, ["grpc.prot", "Did you mean grpc.port?"]),
    ],
)
def test_bad_values_say_which_setting_and_the_fix(
    table: dict[str, object], words: list[str]
) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.from_mapping({"grpc": table})
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[grpc]\nport = 9000\nupstream = "https://api.x.ai"\n')
    settings = _settings(str(path), grpc_port=0, grpc_upstream="http://127.0.0.1:8791")
    assert (settings.grpc.port, settings.grpc.upstream) == (0, "http://127.0.0.1:8791")


def test_a_grpc_port_in_use_is_one_line_naming_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(
            [
                "serve",
                "--port",
                "0",
                "--admin-port",
                "0",
                "--grpc-port",
                str(port),
                "--ledger",
                str(tmp_path / "l.db"),
            ]
        )
    err = capsys.readouterr().err
    assert code == 2
    *_, last = err.strip().splitlines()
    assert "Traceback" not in err and last.startswith("xai-meter: config error: grpc.host")
    assert f"grpc.port = {port}" in last and "--grpc-port N" in last
