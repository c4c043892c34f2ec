"""Prometheus metrics of the processor (normalization, dead letters, produce)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FRAMES = Counter("tickpipe_processor_frames_total", "raw records handled, by outcome "
                 "(records, empty, dead_letter, marker)", ["provider", "outcome"])
RECORDS = Counter("tickpipe_processor_records_total", "normalized records produced", ["provider", "kind"])
DEAD_LETTERS = Counter("tickpipe_processor_dead_letters_total", "raw records sent to dlq.<provider>",
                       ["provider", "error_kind"])
IGNORED = Counter("tickpipe_processor_ignored_messages_total", "provider messages without market data "
                  "(acks, heartbeats, control)", ["provider", "reason"])
CHECK_ERRORS = Counter("tickpipe_processor_check_errors_total", "integrity checks that raised, or alerts that did "
                       "not fit their schema (a bug: the frame's records went out unchecked)", ["provider"])
PRODUCE_ERRORS = Counter("tickpipe_processor_produce_errors_total", "failed produce attempts", ["topic"])
STATE_WRITE_ERRORS = Counter("tickpipe_processor_state_write_errors_total", "state table changelog writes the broker "
                             "never took (the worker stops rather than ack their batch)", ["topic"])
END_TO_END = Histogram("tickpipe_processor_end_to_end_latency_seconds",
                       "Producer receive time of a frame to its clean record acknowledged by Kafka", ["provider"],
                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
BATCH_SIZE = Gauge("tickpipe_processor_last_batch_size", "raw records in the last batch", ["provider"])

REDELIVERED_DROPPED = Counter("tickpipe_processor_redelivered_outputs_dropped_total",
                              "outputs not produced again: a worker before a restore or takeover had "
                              "delivered them (found beyond the restored state's marks)", ["provider"])
REDELIVERY_SCANNED = Counter("tickpipe_processor_redelivery_scanned_records_total",
                             "output records read after a state restore to find what was already delivered",
                             ["provider"])


class ProviderMetrics:
    """Label children of one provider, cached: the hot path only calls ``inc``."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.frames = {o: FRAMES.labels(provider, o) for o in ("records", "empty", "dead_letter", "marker")}
        self.check_errors = CHECK_ERRORS.labels(provider)
        self._records: dict[str, Counter] = {}
        self._dead: dict[str, Counter] = {}
        self._ignored: dict[str, Counter] = {}

    def records(self, kind: str):
        child = self._records.get(kind)
        if child is None:
            child = self._records[kind] = RECORDS.labels(self.provider, kind)
        return child

    def dead_letter(self, error_kind: str):
        child = self._dead.get(error_kind)
        if child is None:
            child = self._dead[error_kind] = DEAD_LETTERS.labels(self.provider, error_kind)
        return child

    def ignored(self, reason: str):
        child = self._ignored.get(reason)
        if child is None:
            if len(self._ignored) >= 100:  # a normalizer putting data into reasons must not explode cardinality
                reason = "other"
            child = self._ignored.setdefault(reason, IGNORED.labels(self.provider, reason))
        return child
