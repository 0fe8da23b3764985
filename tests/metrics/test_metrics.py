"""Metric labels stay bounded; a fresh registry per test (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from daemon.meter.fingerprints import FingerprintTracker
from daemon.metrics import TTFT_BUCKETS, BoundedLabel, Metrics
from daemon.record import CallError, CostSource, Unmetered, Usage
from daemon.testing import make_record


def test_bounded_label_caps_unknown_values() -> None:
    label = BoundedLabel(2, known=["grok-3"])
    assert [label(v) for v in ("a", "b", "c", "grok-3", "a", None)] == [
        "a",
        "b",
        "other",
        "grok-3",
        "a",
        "none",
    ]
    label.add_known(["c"])
    assert label("c") == "c"


def test_model_app_and_key_labels_are_bounded() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, max_models=1, apps=["checkout"], max_apps=1, max_keys=1)
    for i in range(3):
        metrics.observe(
            make_record(
                id=str(i),
                model=f"m{i}",
                app=f"app{i}",
                key_id=f"k_{i}",
                usage=Usage(input_tokens=10),
                cost_ticks=10**10,
                cost_source=CostSource.COMPUTED,
                duration_ms=5.0,
            )
        )
    models = {
        s.labels["model"]
        for f in registry.collect()
        if f.name == "xai_meter_requests"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert models == {"m0", "other"}
    apps = {
        s.labels["app"]: s.value
        for f in registry.collect()
        if f.name == "xai_meter_app_cost_usd"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert apps == {"app0": 1.0, "other": 2.0}
    keys = {
        s.labels["key_id"]
        for f in registry.collect()
        if f.name == "xai_meter_key_cost_usd"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert keys == {"k_0", "other"}
    assert (
        registry.get_sample_value("xai_meter_cost_usd_total", {"provider": "xai", "model": "other"})
        == 2.0
    )


def _traffic(models: int) -> CollectorRegistry:
    """Every per-call metric fed by `models` distinct models (each answering with two
    fingerprints in turn, apps, keys, errors, rate-limit and TTFT headers), max_models=2."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, max_models=2, max_apps=2, max_keys=2)
    tracker = FingerprintTracker(metrics)
    for i in range(models):
        for turn, status in enumerate((200, 200, 200, 429)):
            record = make_record(
                id=f"{i}-{turn}",
                model=f"grok-test-{i}",
                status=status,
                fingerprint=f"fp_{i}_{turn % 2}",
                app=f"app{i}",
                key_id=f"k_{i}",
                usage=Usage(input_tokens=10, cached_input_tokens=2, output_tokens=5),
                cost_ticks=10**9 if turn else None,
                computed_cost_ticks=10**9,
                cost_source=CostSource.REPORTED if turn else CostSource.UNPRICED,
                duration_ms=250.0,
                ttft_ms=90.0,
                upstream_ttft_ms=60.0,
                ratelimit=(480.0, 470.0 - i, 2e6, 1.9e6),
                error=CallError.CLIENT_DISCONNECT if turn == 2 else None,
                unmetered_reason=Unmetered.INCOMPLETE if turn == 2 else None,
            )
            metrics.observe(record)
            tracker.observe(record)
    return registry


def _series(registry: CollectorRegistry) -> dict[str, set[tuple[tuple[str, str], ...]]]:
    out: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for family in registry.collect():
        for sample in family.samples:
            out.setdefault(family.name, set()).add(
                (("__name__", sample.name), *sorted(sample.labels.items()))
            )
    return out


def test_every_metric_family_is_bounded_by_the_model_cap() -> None:
    """max_models=2: five models and nine give the same series in every family, and no model
    label beyond the first two and `other` (xai_meter_fingerprint_info grew one series per
    overflow model and fingerprint)."""
    five, nine = _series(_traffic(5)), _series(_traffic(9))
    assert five.keys() == nine.keys()
    for name in five:
        assert len(five[name]) == len(nine[name]), name
        models = {dict(labels).get("model") for labels in nine[name]}
        models |= {dict(labels).get("gen_ai_response_model") for labels in nine[name]}
        assert models <= {None, "grok-test-0", "grok-test-1", "other"}, name
    info = sorted(
        (dict(labels)["model"], dict(labels)["fingerprint"])
        for labels in nine["xai_meter_fingerprint_info"]
    )
    assert info == [("grok-test-0", "fp_0_0"), ("grok-test-1", "fp_1_0"), ("other", "other")]
    assert len(nine["xai_meter_ratelimit_remaining"]) == 3 * 2  # 3 model labels x 2 kinds
    per_model = len(TTFT_BUCKETS) + 1 + 2  # buckets, +Inf, _count, _sum
    assert len(nine["xai_meter_upstream_ttft_seconds"]) == 3 * per_model


def test_ratelimit_and_upstream_ttft_values() -> None:
    registry = _traffic(1)
    get = registry.get_sample_value
    labels = {"provider": "xai", "model": "grok-test-0"}
    assert get("xai_meter_ratelimit_limit", {**labels, "kind": "requests"}) == 480.0
    assert get("xai_meter_ratelimit_remaining", {**labels, "kind": "requests"}) == 470.0
    assert get("xai_meter_ratelimit_limit", {**labels, "kind": "tokens"}) == 2e6
    assert get("xai_meter_ratelimit_remaining", {**labels, "kind": "tokens"}) == 1.9e6
    assert get("xai_meter_upstream_ttft_seconds_count", labels) == 4
    assert get("xai_meter_upstream_ttft_seconds_sum", labels) == 4 * 0.06
