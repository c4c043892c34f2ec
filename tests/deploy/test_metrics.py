"""Metric names: one scheme with units and bounded labels; the dashboard and the alert rules
query only what the code exports, with labels those metrics have."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.deploy.metric_names import ALERT_RULES as ALERT_RULES_FILE
from tests.deploy.metric_names import (EXTERNAL_METRICS, alert_rules, dashboard_queries, exported_series,
                                       query_use, rule_queries, tickpipe_metrics)

# The only label names a tickpipe metric may carry: each has a small, fixed set of values
# (provider ids, record kinds, reasons, outcomes, topics of the catalogue). Per-message or
# per-instrument labels would make the series count unbounded.
BOUNDED_LABELS = {"provider", "kind", "reason", "outcome", "error_kind", "topic", "scope"}
NAME = re.compile(r"^tickpipe_(producer|processor|integrity|emulator)_[a-z][a-z0-9_]*$")
UNIT_SUFFIXES = ("_seconds", "_bytes", "_ratio", "_records", "_frames")


@pytest.fixture(scope="module")
def exported():
    return exported_series()


@pytest.fixture(scope="module")
def metrics():
    found = tickpipe_metrics()
    assert len(found) >= 10, "the producer and processor metric modules define the metrics"
    return found


def test_metric_names_follow_one_scheme(metrics):
    for metric in metrics:
        assert NAME.match(metric.name), f"{metric.name} ({metric.module}): tickpipe_<component>_<what>"
        assert not metric.name.endswith(("_total", "_ms", "_milliseconds", "_count", "_sum")), metric.name
        if metric.type == "histogram":
            assert metric.name.endswith(UNIT_SUFFIXES), f"{metric.name}: a histogram names its unit"
        if metric.type != "counter":
            assert "_total_" not in metric.name, metric.name


def test_metric_labels_are_bounded(metrics):
    for metric in metrics:
        assert set(metric.labels) <= BOUNDED_LABELS, f"{metric.name} ({metric.module}): labels {metric.labels}"
        assert "provider" in metric.labels or metric.labels in ((), ("topic",)), metric.name


@pytest.mark.parametrize("source", ["dashboard", "alert rules"])
def test_queries_use_only_exported_metrics_and_their_labels(source, exported):
    queries = dashboard_queries() if source == "dashboard" else rule_queries()
    assert queries
    problems = []
    for where, expr in queries.items():
        use = query_use(expr)
        if use.unnamed_selectors:
            problems.append(f"{where}: a selector without a metric name")
        for name in sorted(use.metrics):
            if name in EXTERNAL_METRICS:
                continue
            if name not in exported:
                problems.append(f"{where}: {name} is not exported by tickpipe")
            elif use.labels.get(name, set()) - set(exported[name]):
                problems.append(f"{where}: {name} has no label(s) {sorted(use.labels[name] - set(exported[name]))}")
    assert problems == []


def test_the_cross_check_catches_a_misspelt_metric_and_a_wrong_label(exported):
    use = query_use('sum by (provider) (rate(tickpipe_producer_frames_recieved_total{provider=~"$provider"}[$__rate_interval]))')
    assert use.metrics == {"tickpipe_producer_frames_recieved_total"} and use.metrics - set(exported)
    use = query_use("sum by (symbol) (rate(tickpipe_producer_frames_received_total[5m]))")
    assert use.labels["tickpipe_producer_frames_received_total"] - set(exported["tickpipe_producer_frames_received_total"]) == {"symbol"}
    with pytest.raises(ValueError):
        query_use("sum by (provider (rate(tickpipe_producer_frames_received_total[5m]))")


def test_external_metrics_come_from_a_service_the_stack_runs():
    import yaml

    from tests.deploy.metric_names import ROOT
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    scraped = {target.split(":")[0] for job in prometheus["scrape_configs"]
               for config in job.get("static_configs", []) for target in config["targets"]}
    for service in set(EXTERNAL_METRICS.values()):
        assert service in compose["services"] and service in scraped


def test_alert_rules_are_well_formed():
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert {"TickpipeFeedDead", "TickpipeGapRateRising", "TickpipeConsumerLagGrowing"} <= set(names)
    for rule in rules:
        query_use(rule["expr"])  # parses
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


def test_dashboard_shows_what_the_issue_asks_for():
    queries = " ".join(dashboard_queries().values())
    for metric in ("tickpipe_producer_frames_received_total", "tickpipe_processor_records_total",
                   "tickpipe_producer_reconnects_total", "tickpipe_processor_dead_letters_total",
                   "tickpipe_processor_anomalies_total", "kafka_consumergroup_lag"):
        assert metric in queries


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is not installed")
def test_alert_rules_pass_promtool_and_their_unit_tests():
    rules = ALERT_RULES_FILE
    for args in (["check", "rules", str(rules)], ["test", "rules", str(rules.with_name("alert-rules.test.yml"))]):
        result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_layout_is_sound():
    import json

    from tests.deploy.metric_names import DASHBOARD
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    taken = set()
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"panel '{panel['title']}' overlaps another"
        taken |= cells
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    assert dashboard["uid"] == "tickpipe-overview"
