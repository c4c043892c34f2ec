"""Prometheus metrics of the integrity stage (labels: provider, kind, scope — never an instrument)."""

from __future__ import annotations

import time
from typing import Iterable

from prometheus_client import Counter, Gauge, Histogram

ANOMALIES = Counter("tickpipe_processor_anomalies_total", "Sequence anomalies detected, by kind and scope",
                    ["provider", "kind", "scope"])
MISSING = Counter("tickpipe_processor_missing_messages_total", "Values missing in detected gaps", ["provider", "scope"])
HELD = Gauge("tickpipe_processor_reorder_buffer_records", "Frames and records held in reorder windows", ["provider"])
ALERT_LATENCY = Histogram("tickpipe_processor_alert_latency_seconds",
                          "Receive time of the revealing frame to the alert being raised", ["provider"],
                          buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))


class IntegrityMetrics:
    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._held = HELD.labels(provider)
        self._latency = ALERT_LATENCY.labels(provider)
        self._connections: Iterable = ()
        # Summed when scraped, not per frame: with thousands of instruments per connection
        # the sum costs far more than the frame itself.
        self._held.set_function(self._held_now)

    def _held_now(self) -> int:
        return sum(len(c.connection.held) + sum(len(getattr(t, "held", ())) for t in list(c.records.values()))
                   for c in list(self._connections))

    def observe(self, alerts: list, connections: Iterable) -> None:
        self._connections = connections
        if not alerts:
            return
        now = time.time_ns()
        for alert in alerts:
            ANOMALIES.labels(self.provider, alert["kind"], alert["scope"]).inc()
            if alert["kind"] == "GAP":
                MISSING.labels(self.provider, alert["scope"]).inc(alert.get("missing_count") or 0)
            if alert.get("detected_time"):
                self._latency.observe(max(0.0, (now - alert["detected_time"]) / 1e9))
