"""Monitoring lives with the code and is tested: dashboards, recording rules and alerts.

* the committed dashboard JSON is what dashboards/build.py generates;
* promtool accepts the rules and the scrape config, and the promtool unit tests in
  dashboards/tests/ pass: each alert fires when it should and stays quiet when it should not;
* every alert has severity, summary, description, runbook_url (a section of RUNBOOK.md), for:;
* contract: every metric and label that a dashboard query, variable, annotation, recording rule
  or alert reads is exported by the daemon (daemon/metrics.py) or recorded by our rules;
* several daemons: every dashboard query on a daemon's series is filtered by $instance (but the
  team's values from xAI), and every alert says its scope (fleet or instance); the health
  alerts are the per-instance ones. dashboards/tests/fleet.yaml proves the sums with two.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from daemon.metrics import Metrics
from daemon.metrics.loop import LoopCounter, LoopGauge, LoopHistogram
from daemon.testing import (
    DASHBOARDS,
    JSON_FILES,
    ROOT,
    RULE_FILES,
    RUNBOOK,
    TARGET_LABELS,
    UNIT_TESTS,
    alerts,
    all_expressions,
    binary,
    dashboard_queries,
    label_values,
    load_yaml,
    panels,
    recordings,
)

REQUIRED_ALERTS = {
    "FingerprintChangedNew",
    "SpendBurnRateHigh",
    "UpstreamErrorRateHigh",
    "RateLimited",
    "TTFTSlow",
    "PricesStale",
    "PriceRefreshFailing",
    "CostReconciliationDrift",
    "UnmeteredCallsHigh",
    "UnpricedCallsHigh",
    "LedgerWriteErrors",
    "LedgerUnhealthy",
    "XaiMeterDown",
    # the Management and Billing APIs (a daemon with a management key)
    "ManagementApiFailing",
    "ApiKeyDisabled",
    "ApiKeyExpiringSoon",
    "ApiKeyLimitHeadroomLow",
    "PrepaidBalanceLow",
    "SpendNearLimit",
    "BillingReconciliationGap",
}
# Recording rules that are a constant: the thresholds set in one place.
CONSTANT = re.compile(r"vector\([\d.]+\)")
# The alerts about one daemon (scope instance): each unhealthy daemon alerts, with its instance.
# Every other alert is scope fleet: once however many daemons see it.
PER_INSTANCE_ALERTS = {
    "XaiMeterDown",
    "PricesStale",
    "PriceRefreshFailing",
    "LedgerWriteErrors",
    "LedgerUnhealthy",
    "ManagementApiFailing",
}
# The team's values from xAI's Management and Billing APIs: every daemon with a management key
# reports the same, so the dashboards do not filter them by $instance (a daemon without a
# management key would show nothing).
TEAM_METRICS = re.compile(r"xai_meter_(api_key|billing)_\w+")
AGGREGATION = re.compile(
    r"\b(?:sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)"
    r"\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\("
)


STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
IDENTIFIER = re.compile(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
KEYWORDS = {
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "Inf",
    "NaN",
    "atan2",
}


def metric_names(expr: str) -> set[str]:
    text = STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    return {name for name in IDENTIFIER.findall(text) if name not in KEYWORDS}


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, labels its matchers use) for each `name{...}` selector."""
    text = STRING.sub('""', expr)
    return [
        (name, set(MATCHER_LABEL.findall(matchers)))
        for name, matchers in SELECTOR.findall(text)
        if name
    ]


def grouping_labels(expr: str) -> set[str]:
    text = STRING.sub('""', expr)
    return {
        label.strip()
        for group in GROUPING.findall(text)
        for label in group.split(",")
        if label.strip()
    }


def test_the_promql_reader_finds_names_and_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, model) (rate(x_bucket{model=~"$m", a="b{"}'
        "[$__rate_interval]))) / on () group_left sum(y_total offset 1h) > bool 2 "
        "or vector(1) unless (z:rec:ratio unless w)"
    )
    assert metric_names(expr) == {"x_bucket", "y_total", "z:rec:ratio", "w"}
    assert selector_labels(expr) == [("x_bucket", {"model", "a"})]
    assert grouping_labels(expr) == {"le", "model"}


# --- the daemon's side of the contract -----------------------------------------------------------

SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def exported() -> dict[str, set[str]]:
    """Every sample name the daemon exports, with the label names of its series."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    labels_of = {}
    # Metrics' attributes, and those of the groups it holds (e.g. its ReconciliationGauges)
    found = list(vars(metrics).values())
    found += [
        inner
        for value in found
        if type(value).__module__.startswith("daemon.") and hasattr(value, "__dict__")
        for inner in vars(value).values()
    ]
    for value in found:
        if isinstance(value, MetricWrapperBase):
            labels_of[value._name] = set(value._labelnames)
        elif isinstance(value, LoopCounter | LoopGauge | LoopHistogram):
            labels_of[value.name] = set(value.labelnames)
    names: dict[str, set[str]] = {}
    for family in registry.collect():
        base = family.name
        family_labels = labels_of.get(base, labels_of.get(base.removesuffix("_info"), set()))
        for suffix in SUFFIXES[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            names[base + suffix] = family_labels | extra | TARGET_LABELS
        for sample in family.samples:  # labelless metrics, Info's own labels
            names.setdefault(sample.name, set()).update(sample.labels, TARGET_LABELS)
    return names


def recorded() -> dict[str, set[str]]:
    """Every series name our recording rules record, with the labels it may carry: the
    grouping labels and the rule's own; for a rule that does not aggregate (e.g. the
    per-instance bucket rates), also every label of the series it reads."""
    rules_by_name: dict[str, list[dict[str, Any]]] = {}
    for rule in recordings():
        rules_by_name.setdefault(rule["record"], []).append(rule)
    raw = exported()
    result: dict[str, set[str]] = {}

    def labels(name: str) -> set[str]:
        if name not in result:
            result[name] = set()
            for rule in rules_by_name[name]:
                expr = rule["expr"]
                result[name] |= grouping_labels(expr) | set(rule.get("labels", {}))
                if AGGREGATION.search(expr):
                    continue
                for inner in metric_names(expr):
                    if inner in rules_by_name:
                        result[name] |= labels(inner)
                    else:
                        result[name] |= raw.get(inner, set())
        return result[name]

    for name in rules_by_name:
        labels(name)
    return result


def test_the_daemon_side_is_read_correctly() -> None:
    names = exported()
    assert {
        "xai_meter_requests_total",
        "xai_meter_request_duration_seconds_bucket",
        "xai_meter_build_info",
        "xai_meter_fingerprint_info",
        "xai_meter_in_flight_requests",
    } <= set(names)
    assert "code" in names["xai_meter_requests_total"]
    assert "le" in names["xai_meter_request_duration_seconds_bucket"]
    assert "version" in names["xai_meter_build_info"]
    assert "fingerprint" in names["xai_meter_fingerprint_info"]


def test_every_metric_and_label_used_is_exported_or_recorded() -> None:
    names = exported() | recorded() | {"up": set(TARGET_LABELS)}
    found = all_expressions()
    assert len(found) > 50, "the dashboards and rules were not read"
    problems = []
    for where, expr in found:
        used = metric_names(expr)
        if not used and not CONSTANT.fullmatch(expr.strip()):
            problems.append(f"{where}: no metric read from {expr!r}")
        for name in sorted(used - set(names)):
            kind = "recording rule" if ":" in name else "metric"
            problems.append(f"{where}: {kind} {name} does not exist")
        for name, matcher_labels in selector_labels(expr):
            for label in sorted(matcher_labels - names.get(name, matcher_labels)):
                problems.append(f"{where}: {name} has no label {label!r}")
        available = set().union(*(names.get(name, set()) for name in used))
        for label in sorted(grouping_labels(expr) - available):
            problems.append(f"{where}: no metric of the expression has label {label!r}")
    for path in JSON_FILES:
        for variable in json.loads(path.read_text())["templating"]["list"]:
            if variable["type"] == "query":
                selector, label = label_values(variable["query"])
                (name,) = metric_names(selector)
                if label not in names.get(name, set()):
                    problems.append(f"{path.name}: ${variable['name']}: {name} has no {label}")
    assert not problems, "\n".join(problems)


def test_the_recorded_labels_are_read_correctly() -> None:
    labels = recorded()
    # per instance: a bucket rate keeps the histogram's labels, the target's among them
    assert {"instance", "job", "provider", "model", "le"} <= labels[
        "xai_meter:time_to_first_token_seconds_bucket:rate5m"
    ]
    # fleet: aggregated by the view's labels, without instance
    assert "instance" not in labels["xai_meter:time_to_first_token_seconds:quantile_rate5m"]
    assert labels["xai_meter:spend_usd_per_hour:rate1h"] == {"provider", "model"}


def test_every_dashboard_query_is_filtered_by_the_variables_it_can_be() -> None:
    """A panel on a metric with a provider or model label honours $provider / $model; every
    query on a daemon's series (one with an instance label) honours $instance, but the team's
    values from xAI; every variable but $instance lists only the selected daemons' values."""
    names = exported() | recorded() | {"up": set(TARGET_LABELS)}
    problems = []
    for path in JSON_FILES:
        for where, expr in dashboard_queries(json.loads(path.read_text())):
            wanted = ["provider", "model", "instance"]
            if where.startswith("variable"):
                if where == "variable $instance":
                    continue
                wanted = ["instance"]
            for name, matcher_labels in selector_labels(expr):
                for label in wanted:
                    if label == "instance" and TEAM_METRICS.fullmatch(name):
                        continue
                    if label in names.get(name, set()) and label not in matcher_labels:
                        problems.append(f"{path.name}: {where}: {name} ignores ${label}")
            bare = set(metric_names(expr)) - {n for n, _ in selector_labels(expr)}
            for name in sorted(bare):
                filtered = {"provider", "model"}
                if not TEAM_METRICS.fullmatch(name):
                    filtered.add("instance")
                if names.get(name, set()) & filtered:
                    problems.append(f"{path.name}: {where}: {name} ignores the variables")
    assert not problems, "\n".join(problems)


def test_the_team_panels_say_they_ignore_the_instance_filter() -> None:
    """A panel that reads the team's values unfiltered by $instance says so."""
    constants = {r["record"] for r in recordings() if CONSTANT.fullmatch(r["expr"].strip())}
    problems = []
    for path in JSON_FILES:
        for panel in panels(json.loads(path.read_text())["panels"]):
            exprs = [target["expr"] for target in panel.get("targets", [])]
            unfiltered = [
                name
                for expr in exprs
                for name in metric_names(expr)
                if TEAM_METRICS.fullmatch(name)
                or (name.startswith("xai_meter:") and name not in constants)
            ]
            filtered = "$instance" in " ".join(exprs)
            if unfiltered and not filtered and "whatever $instance" not in panel["description"]:
                problems.append(f"{path.name}: {panel['title']}: reads {unfiltered}")
    assert not problems, "\n".join(problems)


# --- the dashboards are generated --------------------------------------------------------------


def test_dashboards_are_generated_by_build_py() -> None:
    assert [p.name for p in JSON_FILES] == ["xai-meter-operations.json", "xai-meter-spend.json"]
    result = subprocess.run(
        [sys.executable, "dashboards/build.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        "the committed dashboards differ from what dashboards/build.py generates:\n"
        + result.stdout
        + result.stderr
    )


def test_dashboards_have_unique_panel_ids_and_the_variables() -> None:
    for path in JSON_FILES:
        board = json.loads(path.read_text())
        ids = [p["id"] for p in panels(board["panels"])]
        assert len(ids) == len(set(ids)), path.name
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert {"datasource", "instance", "provider", "model"} <= set(variables), path.name
        instance = variables["instance"]
        assert instance["multi"] and instance["includeAll"], path.name
        assert instance["current"]["value"] == "$__all", path.name
        for panel in panels(board["panels"]):
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
                assert panel.get("description"), f"{panel['title']} has no description"
    spend = json.loads((DASHBOARDS / "grafana/xai-meter-spend.json").read_text())
    assert "app" in {v["name"] for v in spend["templating"]["list"]}
    operations = json.loads((DASHBOARDS / "grafana/xai-meter-operations.json").read_text())
    assert "state-timeline" in {p["type"] for p in panels(operations["panels"])}


# --- rules and alerts ------------------------------------------------------------------------


def runbook_anchors() -> set[str]:
    """GitHub's anchors of RUNBOOK.md's headings."""
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return anchors


def test_every_alert_is_complete_and_has_a_runbook_section() -> None:
    anchors = runbook_anchors()
    found = {rule["alert"] for rule in alerts()}
    assert found >= REQUIRED_ALERTS, f"missing alerts: {REQUIRED_ALERTS - found}"
    for rule in alerts():
        name = rule["alert"]
        assert rule.get("for"), f"{name} has no for:"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        scope = "instance" if name in PER_INSTANCE_ALERTS else "fleet"
        assert rule["labels"]["scope"] == scope, name
        notes = rule["annotations"]
        assert notes.get("summary") and notes.get("description"), name
        path, _, anchor = notes["runbook_url"].partition("#")
        assert path == "dashboards/RUNBOOK.md", name
        assert anchor == name.lower() and anchor in anchors, f"{name}: no runbook section"


def test_the_spend_budget_is_set_in_one_place() -> None:
    [budget] = [r for r in recordings() if r["record"] == "xai_meter:spend_budget_usd_per_hour"]
    assert re.fullmatch(r"vector\([\d.]+\)", budget["expr"].strip())
    [alert] = [r for r in alerts() if r["alert"] == "SpendBurnRateHigh"]
    assert "xai_meter:spend_budget_usd_per_hour" in alert["expr"]
    assert not re.search(r"\d", alert["expr"].replace("rate1h", "")), (
        "SpendBurnRateHigh compares against a number: use the budget recording rule"
    )


def test_the_runway_threshold_is_set_in_one_place() -> None:
    [threshold] = [
        r for r in recordings() if r["record"] == "xai_meter:prepaid_runway_threshold_days"
    ]
    assert CONSTANT.fullmatch(threshold["expr"].strip())
    [alert] = [r for r in alerts() if r["alert"] == "PrepaidBalanceLow"]
    assert "xai_meter:prepaid_runway_threshold_days" in alert["expr"]
    compared = alert["expr"].replace("rate1d", "").replace("[7d]", "").replace("> 0", "")
    assert not re.search(r"\d", compared), (
        "PrepaidBalanceLow compares the runway against a number: use the threshold rule"
    )
    spend = json.loads((DASHBOARDS / "grafana/xai-meter-spend.json").read_text())
    exprs = [expr for _where, expr in dashboard_queries(spend)]
    assert "xai_meter:prepaid_runway_threshold_days" in exprs, "the dashboard draws it"


def test_the_key_join_leaves_out_keys_never_seen_in_traffic() -> None:
    """Keys never seen in traffic all have key_id "": two of them on the one side of
    `on (key_id) group_left` would fail the rule (many-to-many), so every join filters them."""
    problems = [
        where
        for where, expr in all_expressions()
        if "xai_meter_api_key_info" in expr
        and re.search(r"on\s*\(key_id\)", expr)
        and 'key_id!=""' not in expr.replace(" ", "")
    ]
    joins = [e for _w, e in all_expressions() if "group_left (api_key_id)" in e]
    assert len(joins) >= 2 and not problems, problems


def test_every_alert_has_unit_tests_that_fire_and_stay_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        spec = load_yaml(path)
        assert spec["rule_files"] == [
            "../rules/xai-meter-recording.yml",
            "../rules/xai-meter-alerts.yml",
        ], path.name
        for test in spec["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names <= fires, f"alerts never tested firing: {names - fires}"
    assert names <= quiet, f"alerts never tested quiet: {names - quiet}"


def test_the_fleet_unit_tests_have_two_instances() -> None:
    """dashboards/tests/fleet.yaml: every test case feeds series of two daemons, and the
    alerts that must add up (or fire once, or per daemon) fire there."""
    spec = load_yaml(DASHBOARDS / "tests/fleet.yaml")
    fires: set[str] = set()
    for test in spec["tests"]:
        instances = {
            match
            for series in test["input_series"]
            for match in re.findall(r'instance="([^"]+)"', series["series"])
        }
        assert instances == {"a:9100", "b:9100"}, test["name"]
        for case in test.get("alert_rule_test", []):
            if case.get("exp_alerts"):
                fires.add(case["alertname"])
    assert {
        "FingerprintChangedNew",
        "SpendBurnRateHigh",
        "TTFTSlow",
        "UpstreamErrorRateHigh",
        "LedgerUnhealthy",
        "XaiMeterDown",
        "ManagementApiFailing",
        "ApiKeyLimitHeadroomLow",
    } <= fires


def test_promtool_checks_the_rules_and_the_scrape_config() -> None:
    promtool = binary("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", *map(str, RULE_FILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run(
        [promtool, "check", "config", str(DASHBOARDS / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    promtool = binary("promtool")
    assert len(UNIT_TESTS) >= 4
    result = subprocess.run(
        [promtool, "test", "rules", *(p.name for p in UNIT_TESTS)],
        cwd=DASHBOARDS / "tests",
        capture_output=True,
        text=True,
        timeout=600,  # a guard against a hang: on a loaded 2-core machine they take ~3 minutes
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_points_at_the_dashboards_and_the_datasource() -> None:
    datasources = load_yaml(DASHBOARDS / "provisioning/datasources/prometheus.yml")
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus"
    providers = load_yaml(DASHBOARDS / "provisioning/dashboards/xai-meter.yml")
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    config = load_yaml(DASHBOARDS / "prometheus.yml")
    assert sorted(config["rule_files"]) == sorted(f"rules/{p.name}" for p in RULE_FILES)
    [job] = config["scrape_configs"]
    assert job["job_name"] == "xai-meter"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9787"]
