"""A relay that is its own upstream: refused at start, and stopped at run time whatever the cause.

An upstream that is the relay itself sends every call back to the relay, which sends it back
again, until sockets or file descriptors run out: one ``curl`` made hundreds of ledger rows, and
the daemon's own price refresh looped the same way. Two guards:

- At start (`daemon.config` runs `own_address` on every upstream): an upstream whose host
  resolves to an address its listener has (``localhost``, ``::1``, any ``127.x`` or this
  machine's own name and addresses when the listener's host is ``0.0.0.0`` or ``::``), on the
  listener's port, is a configuration error. Names are resolved only when the ports are equal
  (no other upstream can be the listener), within `RESOLVE_TIMEOUT` seconds; a name that does
  not resolve, or not in time, is not an error here (the daemon says so when it calls it).
- At run time, for what no check at start can see (two daemons each the other's upstream, a
  name that resolves differently later): every request the relay forwards carries
  ``Via: 1.1 xai-meter-<tag>`` (`VIA`, RFC 9110 7.6.3: what a proxy adds to what it
  forwards; `tag` is random per process), and a request that arrives carrying our own tag
  (`came_back`) has been round the loop: the relay answers it 508 ``loop_detected`` (RFC
  5842) and records that call as one row, so a loop ends at its second pass. Its cost per
  call: one header lookup (`came_back` reads the values only when a Via is present).

Why a Via header is sent upstream: the relay's rule is that what crosses the hop is the
client's request untouched, but a proxy adding its Via is the standard (RFC 9110: a proxy MUST
send one), upstreams ignore it (xAI answers as without it), and no other mark can be found
again after any number of hops, other relays' included.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import Final

#: This process's pseudonym in Via (RFC 9110 7.6.3 ``received-by``): random, so two daemons on
#: one machine (each the other's upstream) tell their own requests from each other's.
TAG: Final = f"xai-meter-{secrets.token_hex(6)}"
#: The Via value the relay adds to every request it forwards (HTTP and WebSocket).
VIA: Final = f"1.1 {TAG}"
#: The 508's message: where the loop is and how to end it.
LOOP_MESSAGE: Final = (
    "This request came back to the xai-meter that relayed it (its own Via tag): the relay's "
    "upstream leads back to the relay itself. Fix: point upstream.base_url (or the "
    "[upstreams.NAME] base_url of this path) at the real upstream, not at a relay in front of "
    "this one."
)
#: Seconds to resolve a host name at start before it is taken as no address of ours.
RESOLVE_TIMEOUT: Final = 2.0

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_WILDCARDS: Final = frozenset({"0.0.0.0", "::", "[::]", ""})


def came_back(headers: Mapping[str, str]) -> bool:
    """True when a request's headers carry our own `TAG` in a Via: the relay sent it, and it
    came back. One lookup when there is no Via (nearly every call); `headers` is aiohttp's
    multidict (every Via line is read when there is one)."""
    if "Via" not in headers:
        return False
    getall = getattr(headers, "getall", None)
    values: Iterable[str] = getall("Via") if getall is not None else (headers["Via"],)
    return any(TAG in value for value in values)


def is_wildcard(host: str) -> bool:
    """``0.0.0.0`` or ``::``: a listener there takes its port on every address of the machine."""
    return host in _WILDCARDS


def own_address(host: str, listen_host: str, timeout: float = RESOLVE_TIMEOUT) -> bool:
    """True when a connection to `host` (a name or IP address) reaches a listener on
    `listen_host` of this machine, on the same port (the caller compares the ports first).

    A wildcard `listen_host` (``0.0.0.0``: IPv4, ``::``: both) has every address of this
    machine: loopback (``127.x``, ``::1``) and those bound to its interfaces (tested by binding
    one). Another `listen_host` has the addresses its name resolves to. `host` ``0.0.0.0`` (or
    ``::``) reaches this machine too. Names resolve within `timeout` seconds; one that does not
    is no address of ours (False)."""
    targets = _addresses(host, timeout)
    if not targets:
        return False
    if is_wildcard(listen_host):
        v6 = listen_host != "0.0.0.0"
        return any((v6 or a.version == 4) and _is_local(a) for a in targets)
    return bool(targets & _addresses(listen_host, timeout))


def _addresses(host: str, timeout: float) -> set[_Address]:
    """The addresses a connection to `host` may reach: a literal as it is (an unspecified one
    as loopback, where Linux sends it), a name as resolved (none in time: none)."""
    literal = _literal(host)
    if literal is not None:
        return {_loopback(literal) if literal.is_unspecified else literal}
    return {_loopback(a) if a.is_unspecified else a for a in _resolve(host, timeout)}


def _literal(host: str) -> _Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _loopback(address: _Address) -> _Address:
    return ipaddress.ip_address("127.0.0.1" if address.version == 4 else "::1")


def _resolve(host: str, timeout: float) -> list[_Address]:
    """`host`'s addresses by getaddrinfo, in a thread of its own: a resolver that hangs (a DNS
    server that does not answer) costs at most `timeout` seconds, then the thread is left to
    end alone. An error or no answer in time: []."""
    found: list[list[_Address]] = []
    done = threading.Event()

    def resolve() -> None:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            infos = []
        addresses = []
        for info in infos:
            literal = _literal(str(info[4][0]).split("%", 1)[0])
            if literal is not None:
                addresses.append(literal)
        found.append(addresses)
        done.set()

    threading.Thread(target=resolve, name="xai-meter-resolve", daemon=True).start()
    return found[0] if done.wait(timeout) else []


def _is_local(address: _Address) -> bool:
    """The address is this machine's: loopback, or one a socket can bind (an interface's)."""
    if address.is_loopback:
        return True
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True
