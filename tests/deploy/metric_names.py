"""What the code exports (from its prometheus-client metrics) and what the dashboard and the
alert rules query (parsed with a PromQL parser), so the two can be compared."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

import promql_parser
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tickpipe.json"
ALERT_RULES = ROOT / "deploy" / "prometheus" / "alert-rules.yml"
# Packages whose `metrics` modules define the metrics of producers and processors.
METRIC_PACKAGES = ("tickpipe.producers", "tickpipe.processors")
# Metrics that come from other exporters in the stack, with the compose service exporting them.
EXTERNAL_METRICS = {"kafka_consumergroup_lag": "kafka-exporter"}
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "info": ("_info",), "stateset": ("",), "enum": ("",)}
GRAFANA_VARIABLE = re.compile(r"\$(\{\w+(?::\w+)?\}|\w+)")


@dataclass(frozen=True)
class ExportedMetric:
    name: str               # the family name, as prometheus-client knows it (no _total)
    type: str
    labels: tuple[str, ...]
    module: str

    def series_names(self) -> set[str]:
        return {self.name + suffix for suffix in SUFFIXES[self.type]}


def tickpipe_metrics() -> list[ExportedMetric]:
    """Every metric defined at module level in a ``metrics`` module of the producer and processor packages."""
    found: dict[str, ExportedMetric] = {}
    for package_name in METRIC_PACKAGES:
        package = importlib.import_module(package_name)
        modules = [importlib.import_module(info.name)
                   for info in pkgutil.walk_packages(package.__path__, package_name + ".")
                   if info.name.rsplit(".", 1)[-1] == "metrics"]
        for module in modules:
            for value in vars(module).values():
                if isinstance(value, MetricWrapperBase):
                    found[value._name] = ExportedMetric(value._name, value._type, tuple(value._labelnames),
                                                        module.__name__)
    return sorted(found.values(), key=lambda m: m.name)


def exported_series() -> dict[str, tuple[str, ...]]:
    """Series name -> label names, for everything a tickpipe /metrics page can show."""
    series: dict[str, tuple[str, ...]] = {}
    for metric in tickpipe_metrics():
        for name in metric.series_names():
            series[name] = metric.labels + (("le",) if name.endswith("_bucket") else ())
    for family in REGISTRY.collect():  # process_*, python_* and anything else on the default registry
        for name in {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}:
            series.setdefault(name, tuple({label for s in family.samples for label in s.labels}))
    return series


def substitute_grafana_variables(expr: str) -> str:
    """Grafana's $variables become values PromQL accepts ($__rate_interval -> 5m)."""
    def value(match: re.Match) -> str:
        name = match.group(1).strip("{}").split(":")[0]
        return "5m" if name in ("__rate_interval", "__interval", "__range") else "x"
    return GRAFANA_VARIABLE.sub(value, expr)


def dashboard_queries(dashboard: dict | None = None) -> dict[str, str]:
    """Where -> PromQL, for every panel target and query variable of the dashboard."""
    dashboard = dashboard if dashboard is not None else json.loads(DASHBOARD.read_text())
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries[f"panel '{panel['title']}' {target['refId']}"] = target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            text = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", text.strip())
            queries[f"variable '{variable['name']}'"] = match.group(1) if match else text
    return queries


def alert_rules(rules_file: Path = ALERT_RULES) -> list[dict]:
    return [rule for group in yaml.safe_load(rules_file.read_text())["groups"] for rule in group["rules"]]


def rule_queries() -> dict[str, str]:
    return {f"rule '{rule.get('alert') or rule.get('record')}'": rule["expr"] for rule in alert_rules()}


@dataclass(frozen=True)
class QueryUse:
    metrics: set[str]
    labels: dict[str, set[str]]  # metric -> label names the query filters or groups it by
    unnamed_selectors: int


def query_use(expr: str) -> QueryUse:
    """Metric names and label names one PromQL expression uses (raises ValueError if it does not parse)."""
    tree = promql_parser.parse(substitute_grafana_variables(expr))
    metrics: set[str] = set()
    labels: dict[str, set[str]] = {}
    unnamed = 0

    def selectors_below(node) -> list:
        found = []
        promql_parser.walk(node, lambda n: found.append(n) if isinstance(n, promql_parser.VectorSelector) else None)
        return found

    def visit(node):
        nonlocal unnamed
        if isinstance(node, promql_parser.VectorSelector):
            if not node.name:
                unnamed += 1
                return
            metrics.add(node.name)
            labels.setdefault(node.name, set()).update(
                m.name for m in node.matchers.matchers if m.name != "__name__")
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            below = [s.name for s in selectors_below(node.expr) if s.name]
            if len(set(below)) == 1:  # the grouping labels must be labels of that one metric
                labels.setdefault(below[0], set()).update(node.modifier.labels)

    promql_parser.walk(tree, visit)
    return QueryUse(metrics, labels, unnamed)
