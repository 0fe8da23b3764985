"""xai-meter's Grafana dashboards as code (grafana-foundation-sdk), written to dashboards/grafana/.

    python dashboards/build.py           # regenerate the committed JSON
    python dashboards/build.py --check   # exit 1 if regenerating would change any file

Every query reads metrics the daemon exports (daemon/metrics.py) or recording rules from
rules/xai-meter-recording.yml; tests/test_dashboards.py checks both, and
tests/test_prometheus_live.py runs every query on a real Prometheus scraping a real daemon.
Variables: $datasource (a Prometheus data source), $instance, $provider, $model and $app
(multi-value, "All" = `.*`), so every selector matches them with `=~`.

Several daemons (one per host or pod, each its own `instance`): every query on a daemon's series
matches `instance=~"$instance"` and aggregates what it draws (sum, max, count by the view's labels,
never by instance unless the panel is per instance), so a total is the selected daemons' total
and "All" is the fleet's. Latency quantiles sum the selected daemons' bucket rates before
histogram_quantile. Exceptions, said in their descriptions: the team's values from xAI (the
Billing row, the API keys and their limits: every daemon with a management key reports the same,
and a key's use sums over every daemon), and the fleet-wide unmetered share (recording rule).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import statetimeline as timeline_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as timeseries_b
from grafana_foundation_sdk.cog import builder as cog_builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).parent / "grafana"
TAG = "xai-meter"
DATASOURCE = dashboard.DataSourceRef(type_val="prometheus", uid="${datasource}")
ALL = dashboard.VariableOption(selected=True, text="All", value="$__all")

# Label matchers for the template variables; every one with $instance.
INST = 'instance=~"$instance"'
PM = f'{INST}, provider=~"$provider", model=~"$model"'
P = f'{INST}, provider=~"$provider"'
M = f'{INST}, model=~"$model"'

BUDGET_NOTE = (
    "The budget is the recording rule xai_meter:spend_budget_usd_per_hour "
    "(dashboards/rules/xai-meter-recording.yml), the one place to change it."
)
RUNWAY_NOTE = (
    "The threshold is the recording rule xai_meter:prepaid_runway_threshold_days "
    "(dashboards/rules/xai-meter-recording.yml), the one place to change it."
)
TEAM_NOTE = (
    "The team's, from xAI, whatever $instance: every daemon with a management key reports "
    "the same, and a key's use sums over every daemon."
)
FLEET_NOTE = "The fleet's (a recording rule over every daemon), whatever $instance."
MANAGEMENT_NOTE = (
    "Needs a management key (management.api_key_env): without one the daemon "
    "exports none of this and the panel stays empty."
)
LEDGER_NOTE = (
    "Prometheus counters: a series' first increment after the daemon starts is not "
    "seen by increase(). The ledger has every call to the tick: "
    "`xai-meter report --since 24h --by model`."
)

PanelBuilder = cog_builder.Builder[dashboard.Panel]


def query(
    expr: str, legend: str = "", *, ref: str = "A", table: bool = False, instant: bool = False
) -> prom_b.Dataquery:
    q = prom_b.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    q = q.legend_format(legend or "__auto")
    if table:
        return q.format(PromQueryFormat.TABLE).instant()
    return q.instant() if instant else q.range()


def queries(*specs: tuple[str, str]) -> list[cog_builder.Builder[Any]]:
    """Several (expr, legend) range queries, ref ids A, B, C..."""
    return [query(expr, legend, ref=chr(ord("A") + i)) for i, (expr, legend) in enumerate(specs)]


def thresholds(*steps: tuple[float | None, str]) -> dash_b.ThresholdsConfig:
    return (
        dash_b.ThresholdsConfig()
        .mode(dashboard.ThresholdsMode.ABSOLUTE)
        .steps([dashboard.Threshold(value=value, color=color) for value, color in steps])
    )


def value_map(mapping: dict[str, tuple[str, str]]) -> dashboard.ValueMap:
    return dashboard.ValueMap(
        options={
            key: dashboard.ValueMappingResult(text=text, color=color, index=i)
            for i, (key, (text, color)) in enumerate(mapping.items())
        }
    )


def organize(hide: tuple[str, ...], rename: dict[str, str]) -> dashboard.DataTransformerConfig:
    return dashboard.DataTransformerConfig(
        id_val="organize",
        options={"excludeByName": {name: True for name in hide}, "renameByName": rename},
    )


def stat(
    title: str, expr: str, unit: str, description: str, legend: str = "", *, width: int = 6
) -> stat_b.Panel:
    return (
        stat_b.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr, legend, instant=True))
        .unit(unit)
        .height(4)
        .span(width)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(thresholds((None, "green")))
    )


def timeseries(
    title: str,
    targets: list[cog_builder.Builder[Any]],
    unit: str,
    description: str,
    *,
    width: int = 12,
) -> timeseries_b.Panel:
    return (
        timeseries_b.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets)
        .unit(unit)
        .height(8)
        .span(width)
        .fill_opacity(10)
        .line_width(1)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_b.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
    )


def table(
    title: str,
    expr: str,
    unit: str,
    description: str,
    *,
    width: int = 8,
    value: str = "Value",
    hide: tuple[str, ...] = ("Time",),
    sort: tuple[str, bool] | None = None,
) -> table_b.Panel:
    """An instant query as a table; its Value column named `value`, sorted by it (descending)
    unless `sort` names another column and the direction (descending?)."""
    column, descending = sort or (value, True)
    return (
        table_b.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr, table=True))
        .unit(unit)
        .height(8)
        .span(width)
        .with_transformation(organize(hide, {"Value": value} if value != "Value" else {}))
        .sort_by([common_b.TableSortByFieldState().display_name(column).desc(descending)])
    )


def timeline(
    title: str,
    expr: str,
    legend: str,
    description: str,
    mapping: dict[str, tuple[str, str]],
    *,
    width: int = 12,
) -> timeline_b.Panel:
    return (
        timeline_b.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr, legend))
        .height(8)
        .span(width)
        .mappings([value_map(mapping)])
        .merge_values(True)
        .show_value(common.VisibilityMode.NEVER)
        .row_height(0.8)
        .legend(common_b.VizLegendOptions().show_legend(False))
    )


def dashed(color: str) -> list[dashboard.DynamicConfigValue]:
    """Field overrides that draw a series as a dashed reference line."""
    return [
        dashboard.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color}),
        dashboard.DynamicConfigValue(
            id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
        ),
        dashboard.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
    ]


def team(panel: PanelBuilder) -> PanelBuilder:
    """A panel of the team's values from xAI: not filtered by $instance, and says so."""
    model = panel.build()
    model.description = f"{model.description} {TEAM_NOTE}"
    return panel


# --- variables and annotations shared by both dashboards ------------------------------------


def label_variable(name: str, label: str, query_text: str) -> dash_b.QueryVariable:
    return (
        dash_b.QueryVariable(name)
        .label(label)
        .query(query_text)
        .datasource(DATASOURCE)
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(ALL)
    )


def variables(*, app: bool) -> Iterator[cog_builder.Builder[dashboard.VariableModel]]:
    yield dash_b.DatasourceVariable("datasource").label("Data source").type("prometheus")
    # Every daemon Prometheus scrapes, up or down (a down one's own series go stale).
    yield label_variable("instance", "Instance", 'label_values(up{job="xai-meter"}, instance)')
    yield label_variable(
        "provider", "Provider", f"label_values(xai_meter_requests_total{{{INST}}}, provider)"
    )
    yield label_variable("model", "Model", f"label_values(xai_meter_requests_total{{{P}}}, model)")
    if app:
        yield label_variable(
            "app", "App", f"label_values(xai_meter_app_cost_usd_total{{{P}}}, app)"
        )


def fingerprint_changes(window: str) -> str:
    """Fingerprint changes within `window` per model and kind, as the selected daemon that saw
    the most counts them (every daemon sees the same upstream change): an increase of the
    changes counter, or the counter's series appearing above 0 (its first change creates it).
    The recording rule xai_meter:fingerprint_changes:increase1h, filtered by the variables."""
    changes = f"xai_meter_fingerprint_changes_total{{{PM}}}"
    return (
        f"max by (provider, model, kind) ("
        f"(increase({changes}[{window}]) > 0) or "
        f"({changes} > 0 unless {changes} offset {window}))"
    )


# A fingerprint change in the 2 minutes before each 1-minute step.
FINGERPRINT_CHANGES = fingerprint_changes("2m")


def share(part: str, whole: str, by: str, window: str) -> str:
    """rate(part) / rate(whole) by `by` over `window`, 0 (not absent) where `whole` has calls
    and `part` none: the recording rules' ratio_rate shares, filtered by the variables. A
    ratio of the selected daemons' sums, never a mean of their ratios."""
    return (
        f"(sum by ({by}) (rate({part}[{window}])) or sum by ({by}) (rate({whole}[{window}])) * 0)"
        f" / sum by ({by}) (rate({whole}[{window}]))"
    )


# Prometheus annotation fields the SDK does not model; added to the JSON by render().
ANNOTATION_EXTRAS: dict[str, dict[str, Any]] = {
    "Fingerprint changes": {
        "step": "1m",
        "titleFormat": "{{model}}: system_fingerprint changed ({{kind}})",
        "textFormat": "provider {{provider}}; kind new = never seen before, known = seen before",
        "tagKeys": "provider,model,kind",
        "useValueForTime": False,
    },
}


def fingerprint_annotation() -> dash_b.AnnotationQuery:
    return (
        dash_b.AnnotationQuery()
        .name("Fingerprint changes")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("red")
        .expr(FINGERPRINT_CHANGES)
    )


def base(uid: str, title: str, description: str, *, app: bool) -> dash_b.Dashboard:
    board = (
        dash_b.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .timezone("browser")
        .time("now-24h", "now")
        .refresh("1m")
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .link(
            dash_b.DashboardLink("xai-meter")
            .type(dashboard.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
        .annotation(fingerprint_annotation())
    )
    for variable in variables(app=app):
        board = board.with_variable(variable)
    return board


class Ids:
    """Panel ids, unique within a dashboard, in the order panels are added."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self, panel: PanelBuilder) -> PanelBuilder:
        self.next += 1
        panel.build().id_val = self.next
        return panel


def layout(
    board: dash_b.Dashboard, sections: list[tuple[str, list[PanelBuilder]]]
) -> dash_b.Dashboard:
    ids = Ids()
    for title, panels in sections:
        row = dash_b.Row(title)
        ids.next += 1
        row.id(ids.next)
        board = board.with_row(row)
        for panel in panels:
            board = board.with_panel(ids(panel))
    return board


# --- the Spend and tokens dashboard ----------------------------------------------------------


def spend_panels() -> list[PanelBuilder]:
    cost = f"xai_meter_cost_usd_total{{{PM}}}"
    return [
        stat(
            "Spend in the selected range",
            f"sum(increase({cost}[$__range]))",
            "currencyUSD",
            "Spend over the dashboard's time range: the cost xAI reported, else the cost "
            "computed from the price list. " + LEDGER_NOTE,
        ),
        stat(
            "Spend, last 24 hours",
            f"sum(increase({cost}[1d]))",
            "currencyUSD",
            "Spend over the last 24 hours, whatever the time range. " + LEDGER_NOTE,
        ),
        stat(
            "Burn rate, last hour (USD/h)",
            f"sum(rate({cost}[1h])) * 3600",
            "currencyUSD",
            "Spend rate over the last hour, in USD per hour. SpendBurnRateHigh fires when it "
            "stays above the budget for 15 minutes.",
        ),
        stat(
            "Hourly budget (USD/h)",
            "xai_meter:spend_budget_usd_per_hour",
            "currencyUSD",
            BUDGET_NOTE,
        ),
        timeseries(
            "Burn rate by model (USD/h)",
            queries(
                (f"sum by (model) (rate({cost}[$__rate_interval])) * 3600", "{{model}}"),
                (f"sum(rate({cost}[$__rate_interval])) * 3600", "total"),
                ("xai_meter:spend_budget_usd_per_hour", "budget"),
            ),
            "currencyUSD",
            "Spend rate per model and in total, against the hourly budget. " + BUDGET_NOTE,
        ).override_by_name("budget", dashed("red")),
        timeseries(
            "Burn rate by app (USD/h)",
            queries(
                (
                    f'sum by (app) (rate(xai_meter_app_cost_usd_total{{{P}, app=~"$app"}}'
                    "[$__rate_interval])) * 3600",
                    "{{app}}",
                ),
            ),
            "currencyUSD",
            "Spend rate per X-Meter-App header value (bounded: "
            "metrics.apps, then the first metrics.max_apps seen, then `other`).",
        ),
        table(
            "Spend by model",
            f"sum by (provider, model) (increase({cost}[$__range]))",
            "currencyUSD",
            "Spend per model over the time range. " + LEDGER_NOTE,
            value="spend",
        ),
        table(
            "Spend by app",
            f'sum by (app) (increase(xai_meter_app_cost_usd_total{{{P}, app=~"$app"}}[$__range]))',
            "currencyUSD",
            "Spend per app (X-Meter-App header) over the time range. Calls without the "
            "header are not in this table.",
            value="spend",
        ),
        table(
            "Spend by key",
            f"sum by (key_id) (increase(xai_meter_key_cost_usd_total{{{P}}}[$__range]))",
            "currencyUSD",
            "Spend per API key id (a salted HMAC of the key, never the key; "
            "bounded by metrics.max_keys) over the time range.",
            value="spend",
        ),
    ]


def reconciliation_panels() -> list[PanelBuilder]:
    reported = f"xai_meter_reconciled_reported_usd_total{{{PM}}}"
    computed = f"xai_meter_reconciled_computed_usd_total{{{PM}}}"
    note = (
        "Over calls that have both: the cost xAI reported (cost_in_usd_ticks) and the cost "
        "computed from the price list in force."
    )
    return [
        stat(
            "Billed by the upstream (range)",
            f"sum(increase({reported}[$__range]))",
            "currencyUSD",
            "What xAI billed. " + note,
            width=8,
        ),
        stat(
            "Computed from the price list (range)",
            f"sum(increase({computed}[$__range]))",
            "currencyUSD",
            "What the price list says for the same calls. " + note,
            width=8,
        ),
        stat(
            "Gap: computed − billed (range)",
            f"sum(increase({computed}[$__range])) - sum(increase({reported}[$__range]))",
            "currencyUSD",
            "Positive: the price list says more than was billed. " + note,
            width=8,
        ),
        timeseries(
            "Price-list drift by model (last hour)",
            queries(
                (
                    f"(sum by (provider, model) (increase({computed}[1h])) - sum by "
                    f"(provider, model) (increase({reported}[1h]))) / sum by (provider, model) "
                    f"(increase({reported}[1h]))",
                    "{{model}}",
                ),
            ),
            "percentunit",
            "(computed − billed) / billed over the last hour, per model. "
            "CostReconciliationDrift fires beyond ±5% for 30 minutes.",
        )
        .thresholds(thresholds((None, "green"), (0.05, "orange")))
        .thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)
        ),
        table(
            "Prices in force (USD per 1M tokens)",
            f"max by (model, type) (xai_meter_price_usd_per_million_tokens{{{M}}})",
            "currencyUSD",
            "The prices the daemon prices calls with now, from xAI's "
            "listings and the pricing.overrides of its configuration.",
            width=12,
            value="USD per 1M tokens",
            sort=("model", False),
        ),
    ]


def token_panels() -> list[PanelBuilder]:
    tokens = f"xai_meter_tokens_total{{{PM}}}"

    def share(part: str, whole: str) -> str:
        return (
            f'(sum(increase(xai_meter_tokens_total{{{PM}, type="{part}"}}[$__range])) '
            f"or vector(0)) / "
            f'sum(increase(xai_meter_tokens_total{{{PM}, type="{whole}"}}[$__range]))'
        )

    return [
        stat(
            "Cached share of input tokens (range)",
            share("cached_input", "input"),
            "percentunit",
            "Cached prompt tokens as a share of all prompt tokens: cached "
            "input is billed at the cheaper cached price.",
            width=12,
        ),
        stat(
            "Reasoning share of output tokens (range)",
            share("reasoning", "output"),
            "percentunit",
            "Reasoning tokens as a share of output tokens (billed as output).",
            width=12,
        ),
        timeseries(
            "Tokens/s by type",
            queries(
                (f"sum by (type) (rate({tokens}[$__rate_interval]))", "{{type}}"),
            ),
            "short",
            "input includes cached_input and image_input; output includes reasoning.",
        ),
        timeseries(
            "Tokens/s by model (input + output)",
            queries(
                (
                    f'sum by (model) (rate(xai_meter_tokens_total{{{PM}, type=~"input|output"}}'
                    f"[$__rate_interval]))",
                    "{{model}}",
                ),
            ),
            "short",
            "Billed tokens per model: prompt (with cached and image) plus output (with reasoning).",
        ),
        timeseries(
            "Cached share of input tokens by model",
            queries(
                (
                    f'sum by (model) (rate(xai_meter_tokens_total{{{PM}, type="cached_input"}}'
                    f"[$__rate_interval])) / sum by (model) "
                    f'(rate(xai_meter_tokens_total{{{PM}, type="input"}}[$__rate_interval]))',
                    "{{model}}",
                ),
            ),
            "percentunit",
            "Models that never had a cached prompt token have no line.",
        ),
        timeseries(
            "Reasoning share of output tokens by model",
            queries(
                (
                    f'sum by (model) (rate(xai_meter_tokens_total{{{PM}, type="reasoning"}}'
                    f"[$__rate_interval])) / sum by (model) "
                    f'(rate(xai_meter_tokens_total{{{PM}, type="output"}}[$__rate_interval]))',
                    "{{model}}",
                ),
            ),
            "percentunit",
            "Reasoning tokens are billed as output; only reasoning models have a line.",
        ),
        table(
            "Tokens by model and type (range)",
            f"sum by (model, type) (increase({tokens}[$__range]))",
            "short",
            "Tokens per model and type over the time range. " + LEDGER_NOTE,
            width=12,
            value="tokens",
        ),
    ]


def billing_panels() -> list[PanelBuilder]:
    """xAI's Billing API (prepaid balance, spending limits, invoice preview) and the daily
    reconciliation against xAI's bill: team-wide, so no $instance/$provider/$model/$app filter
    (max() takes the value the daemons with a management key all report)."""
    limits = "xai_meter_billing_spending_limit_usd"
    reconciliation = "xai_meter_billing_reconciliation_{}_usd"

    def side(name: str, label: str) -> str:
        metric = reconciliation.format(name)
        return f'label_replace(max by (api_key_id) ({metric}), "side", "{label}", "", "")'

    panels: list[PanelBuilder] = [
        stat(
            "Prepaid balance",
            "max(xai_meter_billing_prepaid_balance_usd)",
            "currencyUSD",
            "Prepaid credits left, as xAI's Billing API says (refreshed every "
            "management.refresh_interval). A postpaid team's stays 0. " + MANAGEMENT_NOTE,
        ),
        stat(
            "Prepaid runway (days)",
            "xai_meter:prepaid_runway_days",
            "d",
            "Days the prepaid balance lasts at the last day's burn rate (calls relayed to xAI "
            "only: traffic that bypasses xai-meter shortens it). PrepaidBalanceLow fires below "
            "the threshold for 30 minutes. " + RUNWAY_NOTE,
        ),
        stat(
            "Burn rate, last day (USD/day)",
            "xai_meter:spend_usd_per_day:rate1d",
            "currencyUSD",
            "What the calls relayed to xAI cost per day, over the last day: the runway's "
            "denominator. Less than a day of data reads low.",
        ),
        stat(
            "Month to date / effective limit",
            "xai_meter:billing_spend_limit_used:ratio",
            "percentunit",
            "xAI's invoice preview (month to date) as a share of the effective spending "
            "limit. SpendNearLimit fires above 90% for 15 minutes. " + MANAGEMENT_NOTE,
        ).thresholds(thresholds((None, "green"), (0.9, "red"))),
        timeseries(
            "Prepaid runway against the threshold (days)",
            queries(
                ("xai_meter:prepaid_runway_days", "runway"),
                ("xai_meter:prepaid_runway_threshold_days", "threshold"),
            ),
            "short",
            "Days the prepaid balance lasts at the last day's burn rate, against the "
            "threshold. No line without spend (the runway is infinite). " + RUNWAY_NOTE,
        ).override_by_name("threshold", dashed("red")),
        timeseries(
            "Month to date against the spending limits (USD)",
            queries(
                ("max(xai_meter_billing_invoice_preview_usd)", "month to date"),
                (f"max by (kind) ({limits})", "{{kind}} limit"),
            ),
            "currencyUSD",
            "xAI's invoice preview for this billing period against the monthly spending "
            "limits by kind (hard, effective_hard, soft, effective; a kind xAI does not set "
            "has no line). At the effective limit, xAI refuses calls.",
        ),
        stat(
            "Reconciled day",
            "max(xai_meter_billing_reconciliation_day_timestamp_seconds) * 1000",
            "dateTimeAsIso",
            "The complete UTC day (its 00:00) the reconciliation below describes: the daily "
            "run after management.reconcile_hour_utc. `xai-meter reconcile` has every day "
            "and key, with the unit types that differ.",
            width=4,
        ),
        table(
            "Reconciliation by key: xAI billed, ledger, gap",
            f"{side('billed', 'billed by xAI')} or {side('ledger', 'ledger')} "
            f"or {side('gap', 'gap (ledger - billed)')}",
            "currencyUSD",
            "Per api_key_id for the reconciled day: what xAI billed (Management API usage), "
            "the ledger's cost of the same key and day, and the gap. `unjoined`: calls of "
            "keys not joined to an api_key_id yet. BillingReconciliationGap fires beyond 2% "
            "and $0.01.",
            width=10,
            value="USD",
            sort=("api_key_id", False),
        ),
        timeseries(
            "Reconciliation gap by key (ledger - billed)",
            queries(
                (f"max by (api_key_id) ({reconciliation.format('gap')})", "{{api_key_id}}"),
            ),
            "currencyUSD",
            "The gap of the last complete UTC day, per api_key_id: a step a day. Positive: the "
            "ledger counts more than xAI billed; negative: xAI billed more (voice, storage, "
            "batch, unmetered calls, or the key used without xai-meter).",
            width=10,
        ),
    ]
    return [team(panel) for panel in panels]


def spend_dashboard() -> dash_b.Dashboard:
    board = base(
        "xai-meter-spend",
        "xai-meter / Spend and tokens",
        "What the apps behind xai-meter spend on the xAI API: by model, app and key; "
        "what the upstream billed against the price list; tokens by type.",
        app=True,
    )
    return layout(
        board,
        [
            ("Spend", spend_panels()),
            ("Billed vs the price list", reconciliation_panels()),
            ("Billing", billing_panels()),
            ("Tokens", token_panels()),
        ],
    )


# --- the Operations dashboard ----------------------------------------------------------------


def request_panels() -> list[PanelBuilder]:
    requests = f"xai_meter_requests_total{{{PM}}}"
    # the recording rules' 5xx and 429 shares per provider, for the selected daemons
    every = requests
    five_xx = f'xai_meter_requests_total{{{PM}, code=~"5.."}}'
    four_29 = f'xai_meter_requests_total{{{PM}, code="429"}}'
    return [
        stat(
            "Requests/s",
            f"sum(rate({requests}[$__rate_interval]))",
            "reqps",
            "Calls relayed per second, whatever their ending.",
        ),
        stat(
            "5xx share (5m)",
            f"max({share(five_xx, every, 'provider', '5m')})",
            "percentunit",
            "Share of calls that got a 5xx (the relay's 502/504 included), "
            "worst provider. UpstreamErrorRateHigh fires above 5% for 10 minutes.",
        ).thresholds(thresholds((None, "green"), (0.05, "red"))),
        stat(
            "429 share (5m)",
            f"max({share(four_29, every, 'provider', '5m')})",
            "percentunit",
            "Share of calls rate limited, worst provider. RateLimited fires "
            "above 10% for 10 minutes.",
        ).thresholds(thresholds((None, "green"), (0.1, "orange"))),
        stat(
            "Calls in flight",
            f"sum(xai_meter_in_flight_requests{{{INST}}})",
            "short",
            "Calls being relayed right now.",
        ),
        timeseries(
            "Requests/s by endpoint",
            queries(
                (f"sum by (endpoint) (rate({requests}[$__rate_interval]))", "{{endpoint}}"),
            ),
            "reqps",
            "Calls per API endpoint (chat.completions, responses, messages, ...).",
        ),
        timeseries(
            "Requests/s by status code",
            queries(
                (f"sum by (code) (rate({requests}[$__rate_interval]))", "{{code}}"),
            ),
            "reqps",
            "HTTP status the client got; `none` when it got none (it hung up first).",
        ),
        timeseries(
            "5xx and 429 share by provider",
            queries(
                (share(five_xx, every, "provider", "5m"), "{{provider}} 5xx"),
                (share(four_29, every, "provider", "5m"), "{{provider}} 429"),
            ),
            "percentunit",
            "Over 5-minute windows: the selected daemons' 5xx (or 429) calls over all their "
            "calls, as the recording rules the alerts read compute it for the fleet.",
        ),
        timeseries(
            "Calls that did not end normally, by error",
            queries(
                (
                    f"sum by (endpoint, error) (rate(xai_meter_call_errors_total{{{P}}}"
                    f"[$__rate_interval]))",
                    "{{endpoint}} {{error}}",
                ),
            ),
            "reqps",
            "http_error, upstream_unreachable, upstream_timeout, upstream_stream_cut, "
            "client_disconnect, shutdown, ...",
        ),
        table(
            "Requests by endpoint, model and code (range)",
            f"sum by (endpoint, model, code) (increase({requests}[$__range]))",
            "short",
            "Calls over the time range.",
            width=24,
            value="calls",
        ),
    ]


def latency_panels() -> list[PanelBuilder]:
    def quantiles(bucket: str) -> list[cog_builder.Builder[Any]]:
        """p50/p95/p99 by model from the selected daemons' bucket rates, summed first."""
        return queries(
            *[
                (
                    f"histogram_quantile({q}, sum by (le, provider, model) ({bucket}{{{PM}}}))",
                    f"{{{{model}}}} p{name}",
                )
                for q, name in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))
            ]
        )

    def overall(bucket: str) -> str:
        return f"histogram_quantile(0.95, sum by (le) ({bucket}{{{PM}}}))"

    return [
        stat(
            "p95 request duration (selected models, 5m)",
            overall("xai_meter:request_duration_seconds_bucket:rate5m"),
            "s",
            "Request start to last byte, over all selected models.",
            width=12,
        ),
        stat(
            "p95 time to first token (selected models, 5m)",
            overall("xai_meter:time_to_first_token_seconds_bucket:rate5m"),
            "s",
            "Streams: request start to the first generated token. The SLO is 10 s.",
            width=12,
        ).thresholds(thresholds((None, "green"), (10, "red"))),
        timeseries(
            "Request duration p50 / p95 / p99 by model",
            quantiles("xai_meter:request_duration_seconds_bucket:rate5m"),
            "s",
            "Request start to last byte, over 5-minute windows: the selected daemons' "
            "buckets summed, then the quantile (as the recording rules do for the fleet).",
        ),
        timeseries(
            "Time to first token p50 / p95 / p99 by model",
            quantiles("xai_meter:time_to_first_token_seconds_bucket:rate5m"),
            "s",
            "Streams only. TTFTSlow fires when p95 stays above 10 s for 15 minutes.",
        )
        .thresholds(thresholds((None, "green"), (10, "red")))
        .thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)
        ),
        timeseries(
            "Time to first token p95: ours vs the upstream's",
            queries(
                (
                    "histogram_quantile(0.95, sum by (le, model) "
                    f"(rate(xai_meter_time_to_first_token_seconds_bucket{{{PM}}}[5m])))",
                    "{{model}} ours",
                ),
                (
                    "histogram_quantile(0.95, sum by (le, model) "
                    f"(rate(xai_meter_upstream_ttft_seconds_bucket{{{PM}}}[5m])))",
                    "{{model}} upstream",
                ),
            ),
            "s",
            "Ours: measured here, from the request's start. Upstream: what xAI reports in "
            "x-metrics-ttft-ms. The gap is the network and queueing before xAI.",
        ),
        timeseries(
            "Rate limit remaining, by model",
            queries(
                (
                    f"min by (model, kind) (xai_meter_ratelimit_remaining{{{PM}}}) / "
                    f"max by (model, kind) (xai_meter_ratelimit_limit{{{PM}}})",
                    "{{model}} {{kind}}",
                ),
            ),
            "percentunit",
            "Share of the upstream's rate limit left as of each model's latest call "
            "(x-ratelimit-remaining-* over x-ratelimit-limit-*), for requests and tokens.",
        ),
    ]


def fingerprint_panels() -> list[PanelBuilder]:
    return [
        timeline(
            "Fingerprint in use, per model",
            f"max by (provider, model, fingerprint) (xai_meter_fingerprint_info{{{PM}}})",
            "{{model}} · {{fingerprint}}",
            "One row per model and system_fingerprint: the bar shows when that "
            "fingerprint was the one the model answered with (on any selected daemon). Red "
            "markers (annotation `Fingerprint changes`) show each change.",
            {"1": ("in use", "green")},
            width=24,
        ),
        table(
            "Current fingerprint per model",
            f"count by (provider, model, fingerprint) (xai_meter_fingerprint_info{{{PM}}})",
            "none",
            "The system_fingerprint each model answers with now, and on how many of the "
            "selected daemons (two rows for a model: its backends differ between daemons).",
            value="daemons",
            sort=("model", False),
        ),
        table(
            "Fingerprint changes since the daemon started",
            f"max by (provider, model, kind) (xai_meter_fingerprint_changes_total{{{PM}}})",
            "short",
            "kind new: a fingerprint never seen before (FingerprintChangedNew "
            "fires); known: back to one seen before (several backends alternating). As the "
            "selected daemon that saw the most counts them: each sees the same changes.",
            value="changes",
        ),
        table(
            "Last fingerprint change",
            f"max by (provider, model) "
            f"(xai_meter_fingerprint_last_change_timestamp_seconds{{{PM}}}) * 1000",
            "dateTimeAsIso",
            "When each model's fingerprint last changed.",
            value="last change",
        ),
        timeseries(
            "Fingerprint changes in the last hour",
            queries(
                (fingerprint_changes("1h"), "{{model}} {{kind}}"),
            ),
            "short",
            "Changes per model and kind over the last hour, as the selected daemon that saw "
            "the most counts them (the recording rule FingerprintChangedNew reads, filtered).",
        ),
        timeline(
            "Traffic fingerprint vs the listing",
            f"max by (provider, model) (xai_meter_fingerprint_listing_mismatch{{{PM}}})",
            "{{model}}",
            "Whether the fingerprint in traffic is the one /v1/language-models lists "
            "for the model (differs: on at least one selected daemon).",
            {"0": ("matches the listing", "green"), "1": ("differs from the listing", "orange")},
        ),
    ]


def health_panels() -> list[PanelBuilder]:
    never = dashboard.RangeMap(
        options=dashboard.DashboardRangeMapOptions(
            from_val=1e9, to=1e12, result=dashboard.ValueMappingResult(text="never", color="red")
        )
    )
    return [
        stat(
            "Scrape up",
            f'up{{job="xai-meter", {INST}}}',
            "none",
            "1 when Prometheus scraped the daemon's /metrics: one value per daemon.",
            "{{instance}}",
        ).mappings([value_map({"0": ("down", "red"), "1": ("up", "green")})]),
        stat(
            "Version",
            f"count by (version) (xai_meter_build_info{{{INST}}})",
            "none",
            "The versions the selected daemons run (several while a rollout is under way).",
            "{{version}}",
        ).text_mode(common.BigValueTextMode.NAME),
        stat(
            "Price list age",
            f"time() - xai_meter_price_refresh_last_success_timestamp_seconds{{{INST}}}",
            "s",
            "Time since each daemon's last successful fetch of the price listings. "
            "PricesStale fires (for that daemon) above 3 hours, or when never fetched.",
            "{{instance}}",
        )
        .mappings([never])
        .thresholds(thresholds((None, "green"), (10800, "red"))),
        stat(
            "Price refresh failures (range)",
            f"sum(increase(xai_meter_price_refresh_failures_total{{{INST}}}[$__range]))",
            "short",
            "Refreshes that failed after all retries, on the selected daemons together. "
            "PriceRefreshFailing fires at two within 3 hours on one daemon.",
        ).thresholds(thresholds((None, "green"), (1, "orange"))),
        timeseries(
            "Ledger queue and calls in flight",
            queries(
                (f"sum(xai_meter_ledger_queue_depth{{{INST}}})", "ledger queue"),
                (f"sum(xai_meter_in_flight_requests{{{INST}}})", "in flight"),
            ),
            "short",
            "Rows waiting for the ledger writer, and calls being relayed.",
        ),
        timeseries(
            "Ledger rows written and write errors",
            queries(
                (
                    f"sum(rate(xai_meter_ledger_rows_written_total{{{INST}}}[$__rate_interval]))",
                    "rows/s",
                ),
                (
                    f"sum(rate(xai_meter_ledger_write_errors_total{{{INST}}}[$__rate_interval]))",
                    "failed attempts/s",
                ),
            ),
            "short",
            "LedgerUnhealthy fires when the ledger cannot write for 5 minutes "
            "(rows wait in the journal).",
        ).override_by_name(
            "failed attempts/s",
            [
                dashboard.DynamicConfigValue(
                    id_val="color", value={"mode": "fixed", "fixedColor": "red"}
                )
            ],
        ),
        timeseries(
            "Sink errors/s",
            queries(
                (
                    f"sum by (sink) (rate(xai_meter_sink_errors_total{{{INST}}}"
                    "[$__rate_interval]))",
                    "{{sink}}",
                ),
            ),
            "short",
            "Metering code that raised (the relay and the other sinks are unaffected); "
            "the daemon's log has the traceback (event sink_failed).",
        ),
        timeseries(
            "Unmetered and unpriced share",
            queries(
                ("xai_meter:unmetered:ratio_rate15m", "unmetered {{endpoint}}"),
                (
                    share(
                        f"xai_meter_unpriced_total{{{M}}}",
                        f"xai_meter_requests_total{{{PM}}}",
                        "model",
                        "15m",
                    ),
                    "unpriced {{model}}",
                ),
            ),
            "percentunit",
            "Share of calls whose usage could not be read (UnmeteredCallsHigh: "
            "above 1%) or that had no price (UnpricedCallsHigh: above 5%), over 15 minutes. "
            "Unpriced: the selected daemons'. Unmetered: the fleet's (a recording rule), "
            "whatever $instance: the panel below has the selected daemons' unmetered calls.",
        ),
        timeseries(
            "Unmetered, unpriced and backfilled calls/s",
            queries(
                (
                    f"sum by (endpoint, reason) (rate(xai_meter_unmetered_total{{{INST}}}"
                    "[$__rate_interval]))",
                    "unmetered {{endpoint}} {{reason}}",
                ),
                (
                    f"sum by (model) (rate(xai_meter_unpriced_total{{{M}}}[$__rate_interval]))",
                    "unpriced {{model}}",
                ),
                (
                    f"sum(rate(xai_meter_backfilled_total{{{INST}}}[$__rate_interval]))",
                    "backfilled",
                ),
            ),
            "reqps",
            "Backfilled: unpriced calls priced once prices for them arrived.",
            width=24,
        ),
    ]


def key_panels() -> list[PanelBuilder]:
    """Each xAI API key: measured use against its per-minute limits (recording rules joined on
    key_id, summed by api_key_id over every daemon), what xAI says of it (the team's: not
    filtered by $instance), and the Management API's health (per daemon: filtered)."""
    limit = "xai_meter_api_key_limit"

    def against(measured: str, kind: str) -> list[cog_builder.Builder[Any]]:
        return queries(
            (measured, "{{api_key_id}} measured"),
            (
                f'max by (api_key_id) ({limit}{{limit="{kind}"}}) and on (api_key_id) {measured}',
                "{{api_key_id}} " + kind,
            ),
        )

    keys: list[PanelBuilder] = [
        timeseries(
            "Headroom per key: share of the limit used",
            queries(
                ("xai_meter:key_limit_used:ratio_rate5m", "{{api_key_id}} {{limit}}"),
            ),
            "percentunit",
            "Each key's measured tokens/min over its tpm and requests/min over its qpm "
            "(5-minute windows). ApiKeyLimitHeadroomLow fires above 80% for 10 minutes; at "
            "100% xAI answers 429. Keys without that limit have no line. " + MANAGEMENT_NOTE,
            width=8,
        )
        .thresholds(thresholds((None, "green"), (0.8, "red")))
        .thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)
        ),
        timeseries(
            "Tokens per minute per key, against tpm",
            against("xai_meter:key_tokens_per_minute:rate5m", "tpm"),
            "short",
            "Input + output tokens per minute relayed with each key (5-minute windows), and "
            "its tpm limit. Traffic that bypasses xai-meter counts against the limit too.",
            width=8,
        ),
        timeseries(
            "Requests per minute per key, against qpm",
            against("xai_meter:key_requests_per_minute:rate5m", "qpm"),
            "short",
            "Calls per minute relayed with each key (5-minute windows), and its qpm limit.",
            width=8,
        ),
        table(
            "API keys",
            "max by (name, api_key_id, key_id, disabled) (xai_meter_api_key_info)",
            "none",
            "The team's API keys as xAI's Management API lists them: name, api_key_id, "
            'key_id (our salted hash of the key; "" when never seen in traffic) and disabled. '
            "ApiKeyDisabled fires for a disabled key in use. " + MANAGEMENT_NOTE,
            width=9,
            hide=("Time", "Value"),
            sort=("name", False),
        ),
        table(
            "Rate limits per key",
            f"max by (api_key_id, limit) ({limit})",
            "short",
            "tpm (tokens per minute), qpm (requests per minute), qps (requests per second) "
            "as xAI sets them; a limit not set has no row.",
            width=5,
            value="limit",
            sort=("api_key_id", False),
        ),
        table(
            "Key expiry",
            "max by (api_key_id) (xai_meter_api_key_expiry_timestamp_seconds) * 1000",
            "dateTimeAsIso",
            "Keys that expire, and when. ApiKeyExpiringSoon fires for a key in use within 7 "
            "days of it.",
            width=5,
            value="expires",
            sort=("expires", False),
        ),
    ]
    return [team(panel) for panel in keys] + [
        table(
            "Management API: last success",
            f"min by (what) (xai_meter_management_last_success_timestamp_seconds{{{INST}}}) * 1000",
            "dateTimeAsIso",
            "When each kind of fetch last succeeded, on the selected daemon that succeeded "
            "longest ago (validation, keys, balance, "
            "spending_limits, invoice, usage: the daily reconciliation, key_lookup). "
            "ManagementApiFailing fires at three failures of a kind within an hour on one "
            "daemon.",
            width=5,
            value="last success",
            sort=("what", False),
        ),
        timeseries(
            "Management API failures",
            queries(
                (
                    f"sum by (what) (increase(xai_meter_management_refresh_failures_total{{{INST}}}"
                    "[$__rate_interval])) or sum by (what) "
                    f"(xai_meter_management_last_success_timestamp_seconds{{{INST}}}) * 0",
                    "{{what}}",
                ),
            ),
            "short",
            "Fetches that failed after all retries, per interval and kind, on the selected "
            "daemons together (0 for a kind that succeeds). "
            "The daemon's log has each kind's first failure (management_refresh_failed).",
            width=24,
        ),
    ]


def operations_dashboard() -> dash_b.Dashboard:
    board = base(
        "xai-meter-operations",
        "xai-meter / Operations",
        "Requests and errors, latency and time to first token, model fingerprints "
        "and the daemon's own health.",
        app=False,
    )
    return layout(
        board,
        [
            ("Requests and errors", request_panels()),
            ("Latency and time to first token", latency_panels()),
            ("Fingerprints", fingerprint_panels()),
            ("Daemon health", health_panels()),
            ("API keys and limits", key_panels()),
        ],
    )


# --- output -----------------------------------------------------------------------------------

DASHBOARDS: dict[str, Callable[[], dash_b.Dashboard]] = {
    "xai-meter-spend.json": spend_dashboard,
    "xai-meter-operations.json": operations_dashboard,
}


def render(board: dash_b.Dashboard) -> str:
    model: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for annotation in model.get("annotations", {}).get("list", []):
        annotation.update(ANNOTATION_EXTRAS.get(annotation.get("name", ""), {}))
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    return {name: render(make()) for name, make in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if regenerating would change dashboards/grafana/",
    )
    args = parser.parse_args(argv)
    wanted = generate()
    present = {p.name for p in OUT.glob("*.json")}
    stale = sorted(
        name
        for name, text in wanted.items()
        if not (OUT / name).exists() or (OUT / name).read_text() != text
    )
    extra = sorted(present - set(wanted))
    if args.check:
        for name in stale:
            print(f"dashboards/grafana/{name} is out of date: run python dashboards/build.py")
        for name in extra:
            print(f"dashboards/grafana/{name} is not generated by dashboards/build.py")
        return 1 if stale or extra else 0
    OUT.mkdir(exist_ok=True)
    for name in stale:
        (OUT / name).write_text(wanted[name])
        print(f"wrote dashboards/grafana/{name}")
    for name in extra:
        (OUT / name).unlink()
        print(f"removed dashboards/grafana/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
