"""The `xai-meter` command: serve (the default), demo, simulate, prices, report, fingerprints,
reconcile, check-config, example-config, backup, prometheus-config.

Built on click. `main()` is the entry point (pyproject's `daemon.cli:main`): it returns the exit
code instead of exiting, so tests call `main([...])` and read what it printed. Exit codes: 0 done
(for serve: stopped by SIGTERM or SIGINT, every row written), 1 a command cannot run as asked
(`CommandError`), 2 a config error or a usage error (for serve: anything that stops it starting,
a port taken or a ledger it cannot open included; for reconcile: no bill to reconcile against),
130 Ctrl-C. Every failure is one line on stderr, never a traceback: serve holds its log lines
until it listens, so a start that fails prints that one line alone.

The README's command table is built from these commands by `command_table()`, and
tests/test_cli.py fails when the README's copy differs.

Why it is long: every command is declared here, beside the helpers they share (settings with
overrides, the read-only ledger, the exit codes) and the README table built from them; each
command is a thin shell over the module that does its work.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from daemon import __version__
from daemon.config import ConfigError, Settings, example_toml, load, to_toml
from daemon.ledger import REPORT_GROUPS, fingerprint_history, open_database, report
from daemon.ledger.engine import Database, is_url, open_pg_reader
from daemon.ledger.prices import load_price_history
from daemon.logs import configure
from daemon.pricing import PriceBook, catalog_table, prices_table
from daemon.tables import FORMATS, numeric, render
from daemon.windows import Window, WindowError, parse_window, with_until, zone

CONFIG_ENV = "XAI_METER_CONFIG"
PROG = "xai-meter"


class CommandError(Exception):
    """A command cannot run as asked; the message says why and what to do."""


class _Cli(click.Group):
    """The top-level group: runs `default_command` when no command is named, lists commands in
    the order they were added, and turns the errors a command raises into exit codes."""

    default_command = "serve"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # No command, or an option the group itself does not know (--config, --port, ...):
        # the words are the default command's. A bare unknown word stays an unknown command.
        own = {opt for param in self.get_params(ctx) for opt in param.opts}
        if not args or (args[0].startswith("-") and args[0] not in own):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        # The command list shows each help whole (wrapped), not cut at 45 characters with "...".
        cmd.short_help = cmd.short_help or cmd.help
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            for message in exc.messages or (str(exc),):  # every mistake, a line each
                print(f"{PROG}: config error: {message}", file=sys.stderr)
            return 2
        except CommandError as exc:  # the user's to fix, like a bad setting: exit 2
            print(f"{PROG} {ctx.invoked_subcommand}: {exc}", file=sys.stderr)
            return 2
        except sqlite3.DatabaseError as exc:  # --ledger names a directory, or not a ledger
            print(
                f"{PROG} {ctx.invoked_subcommand}: the ledger cannot be read ({exc}). "
                "Fix: pass --ledger FILE (or set ledger.path) naming one `xai-meter serve` wrote.",
                file=sys.stderr,
            )
            return 2
        except KeyboardInterrupt:
            return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run `xai-meter` with `argv` (default: `sys.argv[1:]`); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args, prog_name=PROG, standalone_mode=False)
    except click.UsageError as exc:
        # click's message, on one line: the usage block would bury it.
        path = exc.ctx.command_path if exc.ctx else PROG
        print(f"{path}: {exc.format_message()} (see {path} --help)", file=sys.stderr)
        return exc.exit_code
    except click.ClickException as exc:
        print(f"{PROG}: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except click.Abort:  # a Ctrl-C that came before any command ran
        return 130
    return result if isinstance(result, int) else 0


# --- the commands -------------------------------------------------------------------------


@click.group(
    cls=_Cli,
    context_settings={"show_default": True, "help_option_names": ["-h", "--help"]},
    help="Usage and cost metering relay for the xAI API. Point your SDK's base URL at "
    "http://127.0.0.1:8787/v1; metrics are on http://127.0.0.1:9787/metrics.\n\n"
    "Without a COMMAND, or with only serve's options, runs serve.",
)
@click.version_option(__version__, "--version", prog_name=PROG, message="%(prog)s %(version)s")
def cli() -> None:
    pass


config_option = click.option(
    "--config",
    "-c",
    metavar="FILE",
    envvar=CONFIG_ENV,
    help=f"TOML config file (default: ${CONFIG_ENV}, else built-in defaults)",
)
ledger_option = click.option(
    "--ledger",
    metavar="FILE|URL",
    help="ledger file, or postgresql://USER@HOST:PORT/DB (default: ledger.url, else ledger.path)",
)
format_option = click.option("--format", "fmt", type=click.Choice(FORMATS), default="table")


@cli.command(help="run the relays (HTTP and gRPC) and the admin listener")
@config_option
@click.option("--port", type=int, metavar="N", help="relay port (overrides relay.port)")
@click.option("--admin-port", type=int, metavar="N", help="admin port (overrides admin.port)")
@click.option("--upstream", metavar="URL", help="upstream base URL (overrides upstream.base_url)")
@click.option(
    "--grpc-port", type=int, metavar="N", help="gRPC port, 0 for none (overrides grpc.port)"
)
@click.option("--grpc-upstream", metavar="URL", help="gRPC upstream URL (overrides grpc.upstream)")
@click.option(
    "--ledger",
    metavar="FILE|URL",
    help="ledger file (overrides ledger.path), or a postgresql:// URL (overrides ledger.url)",
)
def serve(
    config: str | None,
    port: int | None,
    admin_port: int | None,
    upstream: str | None,
    grpc_port: int | None,
    grpc_upstream: str | None,
    ledger: str | None,
) -> None:
    settings = _settings(
        config,
        port=port,
        admin_port=admin_port,
        upstream=upstream,
        ledger=ledger,
        grpc_port=grpc_port,
        grpc_upstream=grpc_upstream,
    )
    api_key = _forced_api_key(settings)
    from daemon.lifecycle import HeldLines  # here: aiohttp loads only for serve

    held = HeldLines(sys.stderr)  # until it listens: a start that fails says one line only
    configure(settings.log.level, settings.log.format, held)
    # grpc core writes its own plain-text lines to stderr, into the daemon's JSON log; all it
    # has to say reaches the daemon anyway, as a status or an exception (set before grpc loads;
    # GRPC_VERBOSITY=debug in the environment still wins, for debugging).
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        _run(_serve(settings, api_key, held.release))
    except ConfigError:
        held.drop()  # the ConfigError's line says all (`_Cli.invoke` prints it)
        raise
    finally:
        held.release()


@cli.command(
    help="simulator + daemon + a burst of traffic, no key needed; prints what was recorded "
    "(in a fresh ledger each run, unless --append)"
)
@click.option(
    "--ledger",
    metavar="FILE",
    default="xai-meter-demo.db",
    help="ledger file for the demo: replaced each run (only a demo's own), unless --append",
)
@click.option(
    "--keep-running", is_flag=True, help="keep simulator and daemon up afterwards (Ctrl-C to stop)"
)
@click.option("--append", is_flag=True, help="add this run's calls to the ledger's earlier ones")
def demo(ledger: str, keep_running: bool, append: bool) -> None:
    configure("warning", "console" if sys.stderr.isatty() else "json")
    from daemon.demo import DemoError, run_demo

    try:
        _run(run_demo(ledger, keep_running=keep_running, append=append))
    except DemoError as exc:
        raise CommandError(str(exc)) from None


@cli.command(help="run the built-in fake of the xAI API, for your own experiments")
@click.option("--host", metavar="HOST", default="127.0.0.1")
@click.option("--port", type=int, metavar="N", default=8788)
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    metavar="N",
    default=8791,
    help="port of the gRPC face, for xai-sdk (0: off)",
)
def simulate(host: str, port: int, grpc_port: int) -> None:
    configure("info", "auto")
    from daemon import simulator

    simulator.run(host, port, grpc_port)


@cli.command(
    help="the price book in force: $ per 1M tokens per model, aliases, source and fetch time, "
    "from the ledger's listings; then the catalog of prices no listing carries (video, voice, "
    "tool fees, multipliers, batch discount), each with the date it took effect and its source"
)
@config_option
@ledger_option
@format_option
@click.option(
    "--catalog",
    "catalog_only",
    is_flag=True,
    help="only the catalog (every dated entry; no ledger needed), in any --format",
)
def prices(config: str | None, ledger: str | None, fmt: str, catalog_only: bool) -> None:
    settings = _settings(config, ledger=ledger)
    if catalog_only:
        catalog = PriceBook(overrides=settings.pricing.overrides).catalog
        rows = catalog_table(catalog)
        if fmt != "table":
            rows = numeric(rows, CATALOG_NUMBERS)
        rows = _as_text(rows) if fmt != "json" else rows
        print(render(rows, fmt, CATALOG_COLUMNS if fmt == "table" else None), end="")
        return
    with _open_ledger(settings) as db:
        book = PriceBook(
            load_price_history(db),
            overrides=settings.pricing.overrides,
        )
        rows = prices_table(book)
    if fmt != "table":  # numbers as numbers, not the table's exact decimal strings
        rows = numeric(rows, PRICE_NUMBERS)
        print(render(rows if fmt == "json" else _as_text(rows), fmt), end="")
        return
    if rows:
        print(render(_as_text(rows), fmt, PRICE_COLUMNS), end="")
    else:
        print(
            "No prices yet. The daemon fetches them from the upstream's "
            "/v1/language-models at start, with $XAI_API_KEY (pricing.api_key_env) "
            "or the key of the first relayed call; or set [pricing.overrides]."
        )
    print(
        "\nPrices no listing carries (the catalog; `xai-meter prices --catalog` lists them "
        "alone, override them in [pricing.overrides.catalog]):"
    )
    print(render(_as_text(catalog_table(book.catalog)), fmt, CATALOG_COLUMNS), end="")


def _as_text(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`prices` rows for a table or CSV: a list (``aliases``) joined with ", ", a bool
    (``in_force``) as yes or no. JSON keeps them as a list and a boolean."""
    return [{k: _text(v) for k, v in row.items()} for row in rows]


def _text(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return ", ".join(value) if isinstance(value, list) else value


@cli.command(
    name="report",
    help="calls, tokens by type, cached share, cost and p50/p95 latency from the ledger, per "
    "group, with the window's total",
)
@config_option
@click.option(
    "--since",
    metavar="WINDOW",
    default="24h",
    help="a duration back from now (30m, 24h, 7d, 2w, 1h30m; m is minutes, 1M is refused), "
    "today, yesterday, this-month, last-month, or an ISO date/time (2026-11-01, "
    "2026-11-01T08:00)",
)
@click.option(
    "--until",
    metavar="WINDOW",
    help="end where this starts (same forms, or now: --until 2026-11-05 stops before Nov 5; "
    "default: now, or the end of yesterday / last-month)",
)
@click.option(
    "--tz",
    metavar="ZONE",
    default="UTC",
    help="IANA time zone (Europe/Paris; UTC in any case) for today, yesterday, months, dates "
    "without an offset and --by day",
)
@click.option(
    "--by",
    type=click.Choice(list(REPORT_GROUPS)),
    default="model",
    help="one row per model, app, key (its id and name), day (in --tz) or endpoint",
)
@ledger_option
@format_option
def report_command(
    config: str | None,
    since: str,
    until: str | None,
    tz: str,
    by: str,
    ledger: str | None,
    fmt: str,
) -> None:
    from daemon.report_output import render_report, table_width

    settings = _settings(config, ledger=ledger)
    window = _window(since, time.time(), tz, until)
    with _open_ledger(settings) as db:
        rep = report(db, window, by)
    print(render_report(rep, fmt, table_width(sys.stdout.isatty())), end="")


@cli.command(help="system_fingerprints seen per model, and every change")
@config_option
@click.option("--model", metavar="M", help="only this (resolved) model")
@ledger_option
@format_option
def fingerprints(config: str | None, model: str | None, ledger: str | None, fmt: str) -> None:
    settings = _settings(config, ledger=ledger)
    with _open_ledger(settings) as db:
        seen, changes = fingerprint_history(db, model)
    for row in (*seen, *changes):
        for column in ("first_seen", "last_seen", "at"):
            if column in row:
                row[column] = _iso(row[column])
    if fmt != "table":
        print(
            render(
                [{"record": "seen", **r} for r in seen]
                + [{"record": "change", **r} for r in changes],
                fmt,
                FINGERPRINT_COLUMNS,
            ),
            end="",
        )
        return
    print(
        "Fingerprints seen:\n" + render(seen) + "\nChanges (kind new: never seen "
        "before; known: one seen before, back):\n" + render(changes),
        end="",
    )


@cli.command(
    name="reconcile",
    help="the ledger against xAI's own bill (Management API usage), per UTC day and key: "
    "billed, ledger, gap and which unit types differ; the bill is fetched when the management "
    "key is set, else read from the pull the daemon stored",
)
@config_option
@click.option(
    "--days",
    type=click.IntRange(1, 366),
    metavar="N",
    help="complete UTC days before today (default: management.reconcile_days); a fetched "
    "bill adds today so far, marked partial",
)
@ledger_option
@format_option
def reconcile_command(config: str | None, days: int | None, ledger: str | None, fmt: str) -> None:
    from daemon.management.report import NoBill, NoLedger, report_text
    from daemon.progress import TerminalProgress

    try:
        with TerminalProgress() as progress:  # on a terminal only; erased before the report
            text = report_text(_settings(config, ledger=ledger), days, fmt, progress.show)
        print(text, end="")
    except NoLedger as exc:
        raise CommandError(f"{exc}. Run `xai-meter serve` first, or pass --ledger FILE.") from None
    except NoBill as exc:  # neither the API nor a stored pull: exit 2, one line
        raise _NoBill(f"reconcile: {exc}") from None


class _NoBill(click.ClickException):
    exit_code = 2


@cli.command(
    name="check-config",
    help="check a config file: every mistake, a line each (exit 2); or, when it is right, "
    "every setting's effective value, as TOML",
)
@click.argument("file", metavar="FILE")
def check_config(file: str) -> None:
    settings = load(file)
    sys.stdout.write(f"# {file}: OK. Every setting's effective value:\n{to_toml(settings)}")


@cli.command(name="example-config", help="print a commented config with every default")
def example_config() -> None:
    sys.stdout.write(example_toml())


# --- backup and prometheus-config (issue 14: a copy of the ledger; a scrape config) ---------


@cli.command(
    help="an online, consistent copy of the ledger (SQLite's backup API), safe while the "
    "daemon writes; never `cp` a ledger in WAL mode"
)
@click.argument("dest", metavar="DEST")
@config_option
@click.option("--ledger", metavar="FILE", help="ledger file (default: ledger.path)")
@click.option("--force", is_flag=True, help="replace DEST if it exists")
def backup(dest: str, config: str | None, ledger: str | None, force: bool) -> None:
    from daemon.ledger.backup import BackupError, backup_ledger
    from daemon.salt import salt_file

    settings = _settings(config, ledger=ledger)
    if settings.ledger.url:
        raise CommandError(
            "backup copies a SQLite ledger; a PostgreSQL one (ledger.url) is backed up with "
            "PostgreSQL's own tools (pg_dump, or the server's base backups). Fix: pass "
            "--ledger FILE."
        )
    try:
        done = backup_ledger(settings.ledger.path, dest, force=force)
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    print(
        f"{settings.ledger.path} -> {done.dest}: {done.calls:,} calls, {done.size:,} bytes "
        "(every row committed when the copy began; back up the salt file, "
        f"{salt_file(settings)}, apart)"
    )


@cli.command(
    name="prometheus-config",
    help="print a Prometheus config that scrapes this daemon's admin listener (admin.host, "
    "admin.port) and loads the shipped alert and recording rules by absolute path",
)
@config_option
@click.option(
    "--rules-dir",
    metavar="DIR",
    help="the directory of xai-meter's rule files (default: dashboards/rules of the source "
    "tree this package runs from, else of the working directory)",
)
@click.option("--scrape-interval", metavar="DURATION", default="15s", help="scrape_interval")
@click.option(
    "--admin-port",
    type=int,
    metavar="N",
    help="the admin port the daemon was started with (serve --admin-port; overrides admin.port)",
)
def prometheus_config(
    config: str | None, rules_dir: str | None, scrape_interval: str, admin_port: int | None
) -> None:
    from daemon.scrape import ScrapeConfigError, scrape_config

    try:
        text = scrape_config(_settings(config, admin_port=admin_port), rules_dir, scrape_interval)
    except ScrapeConfigError as exc:
        raise CommandError(str(exc)) from None
    sys.stdout.write(text)


# --- helpers --------------------------------------------------------------------------------


def _settings(
    config: str | None,
    *,
    port: int | None = None,
    admin_port: int | None = None,
    upstream: str | None = None,
    ledger: str | None = None,
    grpc_port: int | None = None,
    grpc_upstream: str | None = None,
) -> Settings:
    settings = load(config)
    overrides = {
        key: value
        for key, value in (
            ("relay.port", port),
            ("admin.port", admin_port),
            ("upstream.base_url", upstream),
            *_ledger_overrides(ledger),
            ("grpc.port", grpc_port),
            ("grpc.upstream", grpc_upstream),
        )
        if value is not None
    }
    return settings.replace(**overrides) if overrides else settings


def _forced_api_key(settings: Settings) -> str | None:
    env = settings.auth.api_key_env
    if not env:
        return None
    key = os.environ.get(env)
    if not key:
        raise ConfigError(
            f"auth.api_key_env = {env!r}, but ${env} is not set or empty. "
            f'Fix: export {env}=<your key>, or set auth.api_key_env = "".'
        )
    return key


def _ledger_overrides(ledger: str | None) -> list[tuple[str, str | None]]:
    """--ledger: a postgresql:// URL sets ledger.url; a file sets ledger.path (and no URL)."""
    if ledger is None:
        return []
    if is_url(ledger):
        return [("ledger.url", ledger)]
    return [("ledger.path", ledger), ("ledger.url", "")]


@contextmanager
def _open_ledger(settings: Settings) -> Iterator[Database]:
    """The ledger at ledger.url, else ledger.path, read-only; `CommandError` when there is
    none, or PostgreSQL cannot be reached or read. A SQLite file on a read-only file system
    with rows still in its write-ahead log gets one warning line on stderr saying they are
    not shown (`open_database`)."""
    if settings.ledger.url:
        with open_pg_reader(settings.ledger.url) as pg:
            yield pg
        return
    path = Path(settings.ledger.path)
    if not path.exists():
        raise CommandError(
            f"no ledger at {path}. Run `xai-meter serve` first, or pass --ledger FILE."
        )
    command = click.get_current_context().info_name

    def warn(line: str) -> None:
        print(f"{PROG} {command}: warning: {line}.", file=sys.stderr)

    db = open_database(path, readonly=True, warn=warn)
    try:
        yield db
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

# `xai-meter prices` shows each catalog entry's note only in --format json and csv
CATALOG_COLUMNS = ("id", "price", "unit", "effective", "in_force", "origin", "source")

# The USD fields `prices_table` / `catalog_table` give as exact strings: numbers in JSON and CSV.
PRICE_NUMBERS = frozenset(
    f"{name}_usd_per_1m"
    for name in (
        "input",
        "cached_input",
        "output",
        "image_input",
        "input_long",
        "cached_input_long",
        "output_long",
    )
) | {"image_usd", "search_usd"}
CATALOG_NUMBERS = frozenset({"price"})

FINGERPRINT_COLUMNS = [
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
]


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _window(since: str, now: float, tz: str = "UTC", until: str | None = None) -> Window:
    """The window `--since`, `--tz` and `--until` name; what `parse_window` refuses is a
    `CommandError` (exit 2) naming the option."""
    option, value = "--tz", tz
    try:
        zone(tz)
        option, value = "--since", since
        window = parse_window(since, now, tz)
        if until is not None:
            option, value = "--until", until
            window = with_until(window, until, now)
    except WindowError as exc:
        message = f"--tz: {exc}" if option == "--tz" else f"{option} {value!r}: {exc}"
        raise CommandError(message) from None
    return window


async def _serve(settings: Settings, api_key: str | None, started: Callable[[], None]) -> None:
    from daemon.app import Daemon
    from daemon.lifecycle import serve

    await serve(Daemon(settings, api_key=api_key), started)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """asyncio.run with uvloop when it is installed (it is a dependency; faster I/O)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(coro)
    else:
        uvloop.run(coro)


# --- the README's command table ----------------------------------------------------------


def command_table() -> str:
    """The README's "Commands" table (markdown, no trailing newline), built from the commands.

    One row per command, in `--help` order: `xai-meter NAME [--option METAVAR] ... ARG` and the
    command's short help. tests/test_cli.py asserts the README holds exactly this; to refresh it,
    paste the output of `python -c 'from daemon.cli import command_table; print(command_table())'`
    over the old table."""
    root = click.Context(cli, info_name=PROG, **cli.context_settings)
    lines = ["| command | what it does |", "|---|---|"]
    for name in cli.list_commands(root):
        command = cli.commands[name]
        ctx = click.Context(command, info_name=name, parent=root)
        words = [PROG, name]
        for param in command.get_params(ctx):
            if set(param.opts) & set(ctx.help_option_names) or getattr(param, "hidden", False):
                continue
            words.append(_usage_word(param))
        what = command.get_short_help_str(limit=1000)
        if name == cli.default_command:
            what += f" (also what plain `{PROG}` does)"
        usage = " ".join(words).replace("|", "\\|")
        lines.append(f"| `{usage}` | {what.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def _usage_word(param: click.Parameter) -> str:
    # Not make_metavar(): its signature changed in click 8.2, and every parameter here names
    # its metavar or is a Choice.
    if isinstance(param.type, click.Choice):
        metavar = "|".join(str(c) for c in param.type.choices)
    else:
        metavar = param.metavar or (param.name or "").upper()
    if isinstance(param, click.Argument):
        return metavar
    option = max(param.opts, key=len)
    if isinstance(param, click.Option) and param.is_flag:
        return f"[{option}]"
    return f"[{option} {metavar}]"
