"""A relay that is its own upstream (`daemon.loops`): refused at start when the configuration
says so, whatever name the upstream uses for it; and, at run time, a request that comes back
to the relay that sent it (its own Via tag) is answered 508 ``loop_detected`` as one row, so
two daemons each the other's upstream end a call's loop at its second pass."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon import simulator
from daemon.cli import main
from daemon.loops import LOOP_MESSAGE, TAG, VIA, came_back
from daemon.testing import TEST_KEY, DaemonProcess, RunningDaemon, free_port, ledger_rows

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
CHAT: dict[str, Any] = {"model": "grok-3", "messages": [{"role": "user", "content": "hi"}]}


def test_an_upstream_that_is_the_relay_by_name_is_refused_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    code = main(
        [
            *("serve", "--upstream", f"http://localhost:{port}", "--port", str(port)),
            *("--admin-port", "0", "--grpc-port", "0", "--ledger", str(tmp_path / "l.db")),
        ]
    )
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == (
        f"xai-meter: config error: upstream.base_url = 'http://localhost:{port}' is this "
        f"daemon's own relay listener (relay.host = '127.0.0.1', relay.port = {port}): every "
        "call would be relayed back to it, forever. Fix: set upstream.base_url (--upstream) to "
        'the real upstream ("https://api.x.ai"), or move the listener (--port N).\n'
    )
    assert not (tmp_path / "l.db").exists()  # refused before anything opened


def test_came_back_reads_every_via_and_only_our_tag() -> None:
    from multidict import CIMultiDict

    assert not came_back(CIMultiDict())
    assert not came_back(CIMultiDict(Via="1.1 proxy, 1.1 xai-meter-000000000000"))
    assert came_back(CIMultiDict(via=VIA))
    assert came_back(CIMultiDict([("Via", "1.1 proxy"), ("Via", f"1.1 other, 1.1 {TAG}")]))


async def test_a_request_that_came_back_is_answered_508_as_one_row(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            meter.base_url + "/chat/completions",
            json=CHAT,
            headers={**AUTH, "Via": f"1.1 corporate-proxy, {VIA}"},
        ) as looped:
            assert looped.status == 508
            assert await looped.json() == {
                "code": "loop_detected",
                "error": LOOP_MESSAGE,
                "source": "xai-meter",
            }
        # a Via of another proxy (or another xai-meter) is no loop
        async with http.post(
            meter.base_url + "/chat/completions",
            json=CHAT,
            headers={**AUTH, "Via": "1.1 xai-meter-000000000000"},
        ) as passed:
            assert passed.status == 200
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(meter.base_url + "/responses", headers={**AUTH, "Via": VIA})
        assert refused.value.status == 508
    rows = await meter.rows(3)
    assert [(r["status"], r["error"], r["transport"]) for r in rows] == [
        (508, "loop_detected", "http"),
        (200, None, "http"),
        (508, "loop_detected", "websocket"),
    ]
    assert rows[0]["error_detail"] == f"Via: 1.1 corporate-proxy, {VIA}"
    assert meter.metric("xai_meter_relay_rejected_total", reason="loop_detected") == 1.0
    # what the real upstream got: the one call that passed, with our Via after the client's
    assert [r.headers.getall("Via") for r in sim.state.requests] == [
        ["1.1 xai-meter-000000000000", VIA]
    ]


@pytest.mark.slow
async def test_two_daemons_each_the_others_upstream_end_the_loop_at_once(
    tmp_path: Path,
) -> None:
    """A and B, each the other's upstream (no check at start can see it): a call to A goes
    to B, back to A, which answers 508; three rows in all, within seconds."""
    ports = {"a": free_port(), "b": free_port()}
    daemons = {
        name: DaemonProcess(
            tmp_path / f"{name}.toml", tmp_path / f"{name}.log", relay_port=ports[name]
        )
        for name in ports
    }
    try:
        for name, other in (("a", "b"), ("b", "a")):
            await daemons[name].start(
                {
                    "relay": {"host": "127.0.0.1"},
                    "admin": {"host": "127.0.0.1"},
                    "grpc": {"port": 0},
                    "upstream": {"base_url": f"http://127.0.0.1:{ports[other]}"},
                    "ledger": {"path": str(tmp_path / f"{name}.db"), "flush_interval": 0.05},
                    "pricing": {"refresh": False},
                    "log": {"format": "json"},
                }
            )
        began = time.monotonic()
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.post(
                daemons["a"].relay_url + "/v1/chat/completions", json=CHAT, headers=AUTH
            ) as answer,
        ):
            assert answer.status == 508
            assert (await answer.json())["code"] == "loop_detected"
        assert time.monotonic() - began < 5
        assert await asyncio.gather(*(d.stop() for d in daemons.values())) == [0, 0]
    finally:
        for daemon in daemons.values():
            await daemon.kill()
    a_rows = ledger_rows(tmp_path / "a.db")
    b_rows = ledger_rows(tmp_path / "b.db")
    # A: the client's call (B's 508 relayed back) and the call that came back (refused)
    assert sorted((r["status"], r["error"]) for r in a_rows) == [
        (508, "http_error"),
        (508, "loop_detected"),
    ]
    assert [(r["status"], r["error"]) for r in b_rows] == [(508, "http_error")]
