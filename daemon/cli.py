"""The `xai-meter` command: serve, demo, simulate, check-config, example-config."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from daemon import __version__
from daemon.config import ConfigError, Settings, example_toml, load
from daemon.ledger import REPORT_GROUPS, fingerprint_history, open_database, report
from daemon.logs import configure
from daemon.pricing import PriceBook, load_price_history, prices_table
from daemon.tables import FORMATS, render

CONFIG_ENV = "XAI_METER_CONFIG"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xai-meter",
        description="Usage and cost metering relay for the xAI API. Point your SDK's base URL "
        "at http://127.0.0.1:8787/v1; metrics are on http://127.0.0.1:9787/metrics.",
    )
    parser.add_argument("--version", action="version", version=f"xai-meter {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            "-c",
            metavar="FILE",
            default=os.environ.get(CONFIG_ENV),
            help=f"TOML config file (default: ${CONFIG_ENV}, else built-in defaults)",
        )
        return p

    serve = with_config(sub.add_parser("serve", help="run the relay and the admin listener"))
    serve.add_argument("--port", type=int, help="relay port (overrides relay.port)")
    serve.add_argument("--admin-port", type=int, help="admin port (overrides admin.port)")
    serve.add_argument(
        "--upstream", metavar="URL", help="upstream base URL (overrides upstream.base_url)"
    )
    serve.add_argument("--ledger", metavar="FILE", help="ledger file (overrides ledger.path)")

    demo = sub.add_parser("demo", help="simulator + daemon + a burst of traffic, no key needed")
    demo.add_argument(
        "--ledger",
        metavar="FILE",
        default="xai-meter-demo.db",
        help="ledger file for the demo (default: %(default)s)",
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="keep simulator and daemon up afterwards (Ctrl-C to stop)",
    )

    sim = sub.add_parser("simulate", help="run the built-in fake of the xAI API")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8788)

    prices = with_config(
        sub.add_parser(
            "prices", help="the price book: $ per 1M tokens per model, from the ledger's listings"
        )
    )
    prices.add_argument("--ledger", metavar="FILE", help="ledger file (default: ledger.path)")
    prices.add_argument("--format", choices=FORMATS, default="table")

    report = with_config(
        sub.add_parser("report", help="calls, tokens, cost and latency from the ledger")
    )
    report.add_argument(
        "--since",
        default="24h",
        help="a duration back from now (30m, 24h, 7d, 2w) or a date/time in ISO "
        "form (2026-11-01, 2026-11-01T08:00); default %(default)s",
    )
    report.add_argument("--by", choices=sorted(REPORT_GROUPS), default="model")
    report.add_argument("--ledger", metavar="FILE", help="ledger file (default: ledger.path)")
    report.add_argument("--format", choices=FORMATS, default="table")

    fps = with_config(
        sub.add_parser("fingerprints", help="system_fingerprints seen per model, and every change")
    )
    fps.add_argument("--model", metavar="M", help="only this (resolved) model")
    fps.add_argument("--ledger", metavar="FILE", help="ledger file (default: ledger.path)")
    fps.add_argument("--format", choices=FORMATS, default="table")

    check = sub.add_parser("check-config", help="check a config file and show the result")
    check.add_argument("file", metavar="FILE")

    sub.add_parser("example-config", help="print a commented config with every default")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load(args.config)
    overrides = {
        key: value
        for key, value in (
            ("relay.port", getattr(args, "port", None)),
            ("admin.port", getattr(args, "admin_port", None)),
            ("upstream.base_url", getattr(args, "upstream", None)),
            ("ledger.path", getattr(args, "ledger", None)),
        )
        if value is not None
    }
    return settings.replace(**overrides) if overrides else settings


def _forced_api_key(settings: Settings) -> str | None:
    env = settings["auth.api_key_env"]
    if not env:
        return None
    key = os.environ.get(env)
    if not key:
        raise ConfigError(
            f"auth.api_key_env = {env!r}, but ${env} is not set or empty. "
            f'Fix: export {env}=<your key>, or set auth.api_key_env = "".'
        )
    return key


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command = args.command or "serve"
    if args.command is None:
        args = parser.parse_args(["serve", *(argv or sys.argv[1:])])
    try:
        if command == "serve":
            settings = _settings(args)
            configure(settings["log.level"], settings["log.format"])
            api_key = _forced_api_key(settings)
            _run(_serve(settings, api_key))
        elif command in ("prices", "report", "fingerprints"):
            settings = _settings(args)
            print(_ledger_command(command, args, settings), end="")
        elif command == "check-config":
            settings = load(args.file)
            for key, value in settings.values.items():
                print(f"{key} = {value!r}")
            print(f"{args.file}: OK")
        elif command == "example-config":
            sys.stdout.write(example_toml())
        elif command == "simulate":
            configure("info", "auto")
            from daemon import simulator

            simulator.run(args.host, args.port)
        elif command == "demo":
            configure("warning", "console" if sys.stderr.isatty() else "json")
            from daemon.demo import run_demo

            _run(run_demo(args.ledger, keep_running=args.keep_running))
    except ConfigError as exc:
        print(f"xai-meter: config error: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"xai-meter {command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


class CommandError(Exception):
    """A command cannot run as asked; the message says why and what to do."""


def _ledger_command(command: str, args: argparse.Namespace, settings: Settings) -> str:
    path = Path(settings["ledger.path"])
    if not path.exists():
        raise CommandError(
            f"no ledger at {path}. Run `xai-meter serve` first, or pass --ledger FILE."
        )
    db = open_database(path, readonly=True)
    try:
        if command == "prices":
            book = PriceBook(
                load_price_history(db) if "price_sets" in db.table_names() else (),
                overrides=settings["pricing.overrides"],
            )
            rows = prices_table(book)
            if not rows and args.format == "table":
                return (
                    "No prices yet. The daemon fetches them from the upstream's "
                    "/v1/language-models at start, with $XAI_API_KEY (pricing.api_key_env) "
                    "or the key of the first relayed call; or set [pricing.overrides].\n"
                )
            return render(rows, args.format, PRICE_COLUMNS if args.format == "table" else None)
        if command == "fingerprints":
            seen, changes = fingerprint_history(db, args.model)
            for row in (*seen, *changes):
                for column in ("first_seen", "last_seen", "at"):
                    if column in row:
                        row[column] = _iso(row[column])
            if args.format != "table":
                return render(
                    [{"record": "seen", **r} for r in seen]
                    + [{"record": "change", **r} for r in changes],
                    args.format,
                    [
                        "record",
                        "provider",
                        "model",
                        "fingerprint",
                        "first_seen",
                        "last_seen",
                        "calls",
                        "at",
                        "old",
                        "new",
                        "kind",
                    ],
                )
            return (
                "Fingerprints seen:\n" + render(seen) + "\nChanges (kind new: never seen "
                "before; known: one seen before, back):\n" + render(changes)
            )
        since = parse_since(args.since, time.time())
        rows = report(db, since, args.by)
        columns = (
            [c for c in rows[0] if c not in ("cost_ticks", "image_input_tokens")]
            if rows and args.format == "table"
            else None
        )
        return render(rows, args.format, columns)
    finally:
        db.close()


PRICE_COLUMNS = (
    "model",
    "aliases",
    "input_usd_per_1m",
    "cached_input_usd_per_1m",
    "output_usd_per_1m",
    "image_input_usd_per_1m",
    "image_usd",
    "long_context_threshold",
    "source",
    "fetched_at",
)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def parse_since(value: str, now: float) -> float:
    """`30m`, `24h`, `7d`, `2w` back from `now`, or an ISO date/time (UTC unless it says)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = value.strip().lower()
    if text[:-1].isdigit() and text[-1:] in units:
        return now - int(text[:-1]) * units[text[-1]]
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CommandError(
            f"--since {value!r}: expected a duration like 24h or 7d, or a date like 2026-11-01"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


async def _serve(settings: Settings, api_key: str | None) -> None:
    from daemon.app import serve

    await serve(settings, api_key=api_key)


def _run(coro: object) -> None:
    """asyncio.run with uvloop when it is installed (it is a dependency; faster I/O)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(coro)  # type: ignore[arg-type]
    else:
        uvloop.run(coro)  # type: ignore[arg-type]
