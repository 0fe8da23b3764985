"""The daemon with parts of its metering switched off: what each part costs, measured beside the
whole daemon and the floor in one run (`run.py --daemon-variant LABEL:bench.without=PARTS`).

Bench only: a daemon run this way meters wrongly on purpose. It runs from a source tree, as
``python -m daemon`` does (the working directory's ``daemon/`` is the one patched and run):

    python bench/ablated.py --without tap,sinks serve --port 8787 ...   # then serve's options

Parts (comma- or plus-separated):

* ``tap``: no request body is inspected (so no usage is injected into a stream) and no response
  body is read: the daemon relays bytes as the floor does, and books every call, unmetered.
  Its row, journal lines, metrics and call log line stay.
* ``sinks``: no metrics, call log line, fingerprint watch or key names per call. Pricing, the
  ledger row and its journal lines stay: what keeps a call from being lost.

Only the HTTP relay is ablated (`run.py` runs such a daemon without its gRPC listener).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

# The per-call sinks `sinks` drops (`daemon.app.default_sinks` names them).
DROPPED_SINKS = frozenset({"fingerprints", "metrics", "log", "key_names"})


def without_tap() -> None:
    """Every HTTP call gets the base tap (it reads nothing) and no request inspection."""
    from daemon import relay
    from daemon.dialects.base import Dialect, Tap

    def plain_tap(self: relay.Relay, record: Any, dialect: Any, upstream: Any) -> Tap:
        return Tap(record, self._clock)

    def no_inspection(self: Dialect, record: Any, body: bytes) -> None:
        return None

    relay.Relay._make_tap = plain_tap  # type: ignore[method-assign]
    classes: list[type[Dialect]] = [Dialect]
    for cls in classes:  # (grows as it goes: every subclass, however deep)
        classes.extend(cls.__subclasses__())
        cls.inspect_request = no_inspection  # type: ignore[method-assign]


def without_sinks() -> None:
    """The daemon's sinks minus `DROPPED_SINKS`."""
    from daemon import app

    every = app.default_sinks

    def fewer(**kwargs: Any) -> list[Any]:
        return [sink for sink in every(**kwargs) if sink.name not in DROPPED_SINKS]

    app.default_sinks = fewer


PARTS: dict[str, Callable[[], None]] = {"tap": without_tap, "sinks": without_sinks}


def parts(spec: str) -> tuple[str, ...]:
    """``"tap,sinks"`` or ``"tap+sinks"`` as parts, each known; `argparse.ArgumentTypeError`
    naming the known ones otherwise."""
    named = tuple(p.strip() for p in spec.replace("+", ",").split(",") if p.strip())
    unknown = [p for p in named if p not in PARTS]
    if not named or unknown:
        raise argparse.ArgumentTypeError(
            f"parts to switch off: {', '.join(PARTS)} (both: tap,sinks or tap+sinks); got {spec!r}"
        )
    return named


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the xai-meter daemon with parts of its metering switched off "
        "(benchmarks only). Arguments after the options are the daemon's own.",
        allow_abbrev=False,
    )
    parser.add_argument("--without", type=parts, required=True, help="tap, sinks, or both")
    args, rest = parser.parse_known_args(argv)
    sys.path.insert(0, os.getcwd())  # the source tree's daemon/, as `python -m` would find it
    for part in args.without:
        PARTS[part]()
    from daemon.cli import main as daemon_main

    return daemon_main(rest)


if __name__ == "__main__":
    sys.exit(main())
