"""Processor workers killed for real while the feeds stream (Alpaca trades and quotes, Financefeast
prices, cut every few seconds): a worker SIGKILLed and restarted, a second worker taking over the
partitions of one SIGKILLed, and a worker killed between a batch's delivery and its state save.
Accounted message by message against the emulators' journals: the clean topics hold exactly the
messages the emulators sent, less those a RESET alert's span covers, each once. What at-least-once
delivery sent again was removed: redelivered frames by the restored integrity state (DUPLICATE
alerts at the producer scope say so), outputs a killed worker had delivered before saving its
state by the redelivery filter (its metric says so)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import pytest

from tests.reliability.support import (Rig, decode_avro, group_lag, http_get, journal_events, read_topics,
                                       wait_until)
from tickpipe.topics import alerts_topic, raw_topic, tick_topic

PROVIDERS = ["alpaca", "financefeast"]
FAULTS = {p: "disconnect_every=5,close_code=1011" for p in PROVIDERS}
# journal message kind -> clean record kind
KINDS = {("alpaca", "trade"): "trade", ("alpaca", "correction"): "trade", ("alpaca", "cancelError"): "trade",
         ("alpaca", "quote"): "quote", ("financefeast", "price"): "trade"}
KILLED_WORKER = {"TICKPIPE_PROCESSOR_COMMIT_INTERVAL_S": "60",    # commits only at rebalances: its heir takes over partitions it never committed, and the kill makes redeliveries
                 "TICKPIPE_INTEGRITY_STALE_AFTER_S": "0"}
WORKER = {"TICKPIPE_INTEGRITY_STALE_AFTER_S": "0"}
# connection ids (the raw records' keys) on different partitions, so two workers share the work
CONNECTION_IDS = {"alpaca": ["--connection-id", "alpaca-1"], "financefeast": ["--connection-id", "financefeast-0"]}


def sent_messages(rig: Rig) -> list[tuple[tuple, int]]:
    """(identity, send time) of every data message the emulators journaled."""
    out = []
    for provider in PROVIDERS:
        for e in journal_events(rig.journal(provider)):
            ids = e.get("ids") or {}
            kind = KINDS.get((provider, ids.get("kind")))
            if e.get("event") == "sent" and kind:
                out.append(((provider, kind, ids["instrument"], ids["event_ns"]), e["ts_ns"]))
    return out


def clean_records(rig: Rig) -> tuple[Counter, list[dict]]:
    prefix = rig.kafka.topic_prefix
    topics = [tick_topic("trade", prefix), tick_topic("quote", prefix), alerts_topic(prefix)]
    decoded = decode_avro(asyncio.run(read_topics(rig.kafka, topics, idle_s=3.0)))
    ticks = Counter((r["provider"], r.name.lower(), r["symbol"], r["event_time"])
                    for t, r in decoded if t != alerts_topic(prefix))
    return ticks, [r for t, r in decoded if t == alerts_topic(prefix)]


def account(rig: Rig, figures, outputs_dropped: int) -> None:
    """The clean topics against the journals (see the module docstring)."""
    ticks, alerts = clean_records(rig)
    sent = sent_messages(rig)
    spans = {p: [(a["span_start"], a["span_end"]) for a in alerts if a["provider"] == p and a["kind"] == "RESET"]
             for p in PROVIDERS}
    covered = Counter(i for i, ts in sent if any(a <= ts <= b for a, b in spans[i[0]]))
    everything = Counter(i for i, _ in sent)
    uncovered = everything - covered
    lost = uncovered - ticks
    extra = ticks - everything
    assert len(everything) == sum(everything.values()), "the journal should name each message once"
    sent_at = dict(sent)
    near = {i: [(a["kind"], a["scope"], a["counter"], a.get("detail")) for a in alerts
                if a["provider"] == i[0] and abs(a["detected_time"] - sent_at[i]) < 3e9] for i in lost}
    assert (lost, extra) == (Counter(), Counter()), \
        f"{sum(lost.values())} lost, {sum(extra.values())} not sent; alerts near the lost ones: {near}"
    assert max(ticks.values()) == 1, "a message reached the clean topics twice"
    redelivered = [a for a in alerts if a["kind"] == "DUPLICATE" and a["scope"] == "producer"]
    assert redelivered or outputs_dropped, "the kill caused no redelivery: nothing was tested"
    assert not [a for a in alerts if a["kind"] in ("GAP", "OUT_OF_ORDER")], "a restart must not look like loss"
    assert all(spans.values()), "every feed was cut at least once"
    figures["records lost in the clean topics"] += sum(lost.values())
    figures["duplicates in the clean topics"] += sum(n - 1 for n in ticks.values())
    figures["messages accounted for across worker kills"] += sum(everything.values())
    figures["redelivered frames removed by the integrity layer"] += len(redelivered)
    figures["outputs a killed worker had delivered, not sent again by its successor"] += outputs_dropped


def frames_processed(child) -> float:
    text = http_get(child.ready["ops_port"], "/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tickpipe_processor_frames_total{"))


def redelivered_dropped(child) -> float:
    text = http_get(child.ready["ops_port"], "/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tickpipe_processor_redelivered_outputs_dropped_total{"))

def settled(rig: Rig, workers, quiet_s: float = 4.0, timeout: float = 120.0) -> None:
    """Wait until the workers' group has committed every raw record (the partitions of a dead
    worker are reassigned, recovered and read only after its session expires: a loaded machine can
    take long), and every surviving worker has handled frames and handled none for ``quiet_s``."""
    raw = [raw_topic(p, rig.kafka.topic_prefix) for p in PROVIDERS]
    group = f"proc-{rig.kafka.topic_prefix}"
    lag: dict = {}
    last, since, deadline = None, time.monotonic(), time.monotonic() + timeout
    while True:
        counts = [frames_processed(w) for w in workers]
        now = time.monotonic()
        if counts != last:
            last, since = counts, now
        elif now - since >= quiet_s and all(counts):
            lag = asyncio.run(group_lag(rig.kafka, group, raw))
            if not any(lag.values()):
                return
            since = now  # not yet: look again after another quiet spell
        assert now < deadline, f"workers still busy or idle after {timeout:g}s: frames {counts}, lag {lag}"
        time.sleep(0.5)


@contextlib.contextmanager
def failover(kafka_settings, tmp_path, figures, killed: str):
    """A rig on the test's broker; on leaving: the feeds stopped cleanly (each emulator closes its
    connections after the last message it journaled), the surviving worker drained, nothing but
    the ``killed`` worker dead, then the accounting."""
    rig = Rig(kafka_settings, tmp_path)
    rig.declare_topics()
    try:
        yield rig
        for child in rig.emulators.values():
            child.stop(15)
        survivors = [c for name, c in rig.workers.items() if name != killed]
        settled(rig, survivors)
        dropped = int(sum(redelivered_dropped(c) for c in survivors))
        assert [c for c in rig.crashed() if not c.startswith("emulate-") and c != killed] == []
        account(rig, figures, dropped)
    finally:
        rig.stop()
    figures["processor workers SIGKILLed mid-stream (restart, takeover)"] += 1


@pytest.mark.timeout(150)
def test_a_sigkilled_worker_restarted_loses_nothing_and_duplicates_nothing(kafka_settings, tmp_path, figures):
    with failover(kafka_settings, tmp_path, figures, killed="worker-1") as rig:
        first = rig.worker("worker-1", PROVIDERS, env=KILLED_WORKER)
        first.start()
        rig.start_feeds(PROVIDERS, faults=FAULTS, rate=40)
        wait_until(lambda: frames_processed(first) > 200, 30, "the first worker processing")
        time.sleep(1.0)
        first.process.kill()                                   # SIGKILL, mid-stream
        first.process.wait(10)
        rig.worker("worker-2", PROVIDERS, env=WORKER).start()
        time.sleep(6.0)


@pytest.mark.timeout(150)
def test_a_second_worker_takes_over_the_partitions_of_a_sigkilled_one(kafka_settings, tmp_path, figures):
    with failover(kafka_settings, tmp_path, figures, killed="worker-a") as rig:
        victim = rig.worker("worker-a", PROVIDERS, env=KILLED_WORKER)
        heir = rig.worker("worker-b", PROVIDERS, env=WORKER)
        victim.start()
        heir.start()
        rig.start_feeds(PROVIDERS, faults=FAULTS, rate=40, producer_args=CONNECTION_IDS)
        wait_until(lambda: frames_processed(victim) > 100 and frames_processed(heir) > 100, 45,
                   "both workers processing (the partitions split between them)")
        victim.process.kill()                                  # SIGKILL: its partitions go to worker-b
        victim.process.wait(10)
        handled = frames_processed(heir)
        wait_until(lambda: frames_processed(heir) > handled + 400, 45, "worker-b taking over")


@pytest.mark.timeout(150)
def test_a_worker_killed_between_delivery_and_saving_its_state_duplicates_nothing(kafka_settings, tmp_path, figures):
    """The worst moment, on purpose: the worker SIGKILLs itself right after a batch's outputs are
    acknowledged and before the state that vouches for them is saved (``FAULT_KILL_AFTER_BATCHES``).
    Its successor finds those outputs in the clean topics and does not send them again."""
    with failover(kafka_settings, tmp_path, figures, killed="worker-1") as rig:
        first = rig.worker("worker-1", PROVIDERS, env={**KILLED_WORKER, "TICKPIPE_PROCESSOR_FAULT_KILL_AFTER_BATCHES": "40"})
        first.start()
        rig.start_feeds(PROVIDERS, faults=FAULTS, rate=40)
        wait_until(lambda: first.process.poll() is not None, 60, "the first worker killing itself")
        second = rig.worker("worker-2", PROVIDERS, env=WORKER)
        second.start()
        wait_until(lambda: redelivered_dropped(second) >= 1, 60,
                   "the second worker dropping a tick the first delivered (else nothing was tested)")
