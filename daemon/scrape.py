"""`xai-meter prometheus-config`: a Prometheus config for this daemon, built from its settings.

The scrape target follows ``admin.host`` and ``admin.port`` (a wildcard host, ``0.0.0.0`` or
``::``, is scraped on ``127.0.0.1``; ``--admin-port N``, as given to ``serve``, overrides the
port), and ``rule_files`` name the shipped alert and recording
rules (``dashboards/rules/xai-meter-*.yml``) by absolute path, so the file works from any
directory. ``dashboards/prometheus.yml`` is the same config for the default settings, with rule
paths relative to itself: a template for a checkout; this command is what follows a changed
``admin.port``. The job name stays ``xai-meter``: the alerts and dashboards select it.

The text is YAML written by hand (strings JSON-quoted, which YAML reads as they are): PyYAML is
not a dependency of the daemon. `tests/test_scrape.py` runs the real ``promtool check config``
on it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Final

import daemon
from daemon.config import Settings

JOB: Final = "xai-meter"  # the alerts' and dashboards' job="xai-meter"
RULES: Final = ("xai-meter-alerts.yml", "xai-meter-recording.yml")  # at least these
# Prometheus' duration syntax (model.ParseDuration): units largest first, each at most once.
_DURATION = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")
_WILDCARDS = ("", "0.0.0.0", "::", "[::]")


class ScrapeConfigError(Exception):
    """The config cannot be made as asked; ``str()`` is one line saying why and the fix."""


def rules_directory(given: str | None) -> Path:
    """The directory holding the rule files, absolute: `given`, else ``dashboards/rules`` of
    the source tree the package runs from (a checkout, an editable install), else of the
    working directory. Raises `ScrapeConfigError` when the one chosen lacks `RULES`."""
    if given:
        candidates = [Path(given)]
    else:
        source_tree = Path(daemon.__file__).resolve().parent.parent
        candidates = [source_tree / "dashboards" / "rules", Path.cwd() / "dashboards" / "rules"]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in RULES):
            return candidate.resolve()
    where = " or ".join(str(c) for c in candidates)
    raise ScrapeConfigError(
        f"no xai-meter rule files ({', '.join(RULES)}) in {where}. Fix: pass --rules-dir DIR, "
        "the dashboards/rules directory of the xai-meter source."
    )


def admin_target(host: str, port: int) -> str:
    """``host:port`` Prometheus scrapes for an admin listener on `host`, `port`: a wildcard
    address becomes ``127.0.0.1``, an IPv6 one is bracketed."""
    if host in _WILDCARDS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def scrape_config(settings: Settings, rules_dir: str | None, scrape_interval: str = "15s") -> str:
    """The config's YAML text: ``global`` (`scrape_interval`, also the rules' evaluation
    interval), ``rule_files`` (absolute paths of every ``xai-meter-*.yml`` in
    `rules_directory`, sorted) and one scrape job, ``xai-meter``, on `admin_target`.

    Raises `ScrapeConfigError` for ``admin.port = 0`` (a new port each start: nothing to put
    in a config), an interval Prometheus would not read (or zero), or no rule files."""
    if settings.admin.port == 0:
        raise ScrapeConfigError(
            "admin.port = 0 picks a free port at each start, so no config can name it. "
            "Fix: set admin.port (or pass the --config FILE that sets it)."
        )
    if not _DURATION.match(scrape_interval) or not any(
        int(n) for n in re.findall(r"\d+", scrape_interval)
    ):
        raise ScrapeConfigError(
            f"--scrape-interval {scrape_interval!r} is not a Prometheus duration. "
            "Fix: a number and a unit, e.g. 15s, 1m, 1m30s."
        )
    rules = sorted((rules_directory(rules_dir)).glob("xai-meter-*.yml"))
    target = admin_target(settings.admin.host, settings.admin.port)
    lines = [
        "# Prometheus configuration for xai-meter, made by `xai-meter prometheus-config`: scrape",
        "# the daemon's admin listener (admin.host:admin.port) and load its rules.",
        "#   prometheus --config.file=prometheus.yml   (check: promtool check config FILE)",
        "global:",
        f"  scrape_interval: {scrape_interval}",
        f"  evaluation_interval: {scrape_interval}",
        "",
        "rule_files:",
        *(f"  - {json.dumps(str(path))}" for path in rules),
        "",
        "scrape_configs:",
        '  # The alerts and dashboards select job="xai-meter": keep the job name.',
        f"  - job_name: {JOB}",
        "    metrics_path: /metrics",
        "    static_configs:",
        f"      - targets: [{json.dumps(target)}]   # admin.host:admin.port",
    ]
    return "\n".join(lines) + "\n"
