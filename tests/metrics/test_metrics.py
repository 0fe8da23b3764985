"""Metric labels stay bounded; a fresh registry per test (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from daemon.metrics import BoundedLabel, Metrics
from daemon.record import CostSource, Usage
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
