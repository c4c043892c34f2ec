"""Prometheus metrics of producers: one naming scheme, units in the names, bounded labels.

Labels: ``provider`` (a provider id) and, on reconnects, ``reason`` (one of
:data:`REASONS`). Connection and session ids never become label values.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

P = "tickpipe_producer_"
REASONS = ("closed", "stale", "timeout", "error", "auth_failed", "connect_failed", "token_refresh", "shutdown")

frames_received = Counter(P + "frames_received_total", "Frames received from the feed", ["provider"])
bytes_received = Counter(P + "bytes_received_total", "Bytes of frames received from the feed", ["provider"])
frames_produced = Counter(P + "frames_produced_total", "Records (frames and markers) acknowledged by Kafka", ["provider"])
bytes_produced = Counter(P + "bytes_produced_total", "Record value bytes acknowledged by Kafka", ["provider"])
frames_dropped = Counter(P + "frames_dropped_total", "Frames dropped oldest-first past the buffer bound", ["provider"])
produce_retries = Counter(P + "produce_retries_total", "Records handed back to the buffer after a failed produce", ["provider"])
reconnects = Counter(P + "reconnects_total", "Sessions ended or connects failed, by reason", ["provider", "reason"])
auth_failures = Counter(P + "auth_failures_total", "Authentication attempts the provider refused", ["provider"])
auth_failing = Gauge(P + "auth_failing", "1 while the credentials are being refused (permanent auth failure)", ["provider"])
connected = Gauge(P + "connected", "1 while a feed connection is open", ["provider"])
ready = Gauge(P + "ready", "1 while connected, authenticated and subscribed", ["provider"])
seconds_since_last_frame = Gauge(P + "seconds_since_last_frame", "Seconds since the last frame arrived", ["provider"])
produce_latency = Histogram(P + "produce_latency_seconds", "Receive to Kafka acknowledgement", ["provider"],
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
buffered_frames = Gauge(P + "buffered_frames", "Records waiting for Kafka (buffered and in flight)", ["provider"])
buffered_bytes = Gauge(P + "buffered_bytes", "Bytes waiting for Kafka (buffered and in flight)", ["provider"])
buffer_fill_ratio = Gauge(P + "buffer_fill_ratio", "Buffer fill, 0..1, the larger of records and bytes", ["provider"])
reading_paused = Gauge(P + "reading_paused", "1 while feed reads are paused for back-pressure", ["provider"])
paused_seconds = Counter(P + "reading_paused_seconds_total", "Time feed reads were paused for back-pressure", ["provider"])
loss_markers = Counter(P + "loss_markers_total", "Loss marker records written", ["provider"])
resyncs = Counter(P + "resyncs_total", "Resync requests, by outcome (done, unknown, not_ready, failed)", ["provider", "outcome"])
control_rejected = Counter(P + "control_rejected_total", "Control records that could not be understood", ["provider"])
