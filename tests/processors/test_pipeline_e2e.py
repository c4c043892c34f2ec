"""The whole pipeline as real processes: Alpaca emulator -> producer -> raw topic -> Faust -> clean topics.

The clean trades (with corrections and cancels), decoded with the shipped schemas, are
exactly what the emulator's journal says it sent, in order (msgpack frames, the
producer's default mode).
"""

from __future__ import annotations

import asyncio
import signal
import time
from decimal import Decimal
from pathlib import Path

from tests.processors.test_process_e2e import consume, process_child
from tickpipe.children import Child, tickpipe_command
from tickpipe.emulators.journal import read_journal
from tickpipe.topics import dlq_topic, tick_topic



JOURNAL_KIND = {"new": "trade", "correction": "correction", "cancel": "cancelError", "error": "cancelError"}


def sent_trades(journal: Path) -> list[tuple[str, str, str]]:
    """(journal kind, instrument, trade id) of every trade, correction and cancel the emulator sent."""
    return [(e["ids"]["kind"], e["ids"]["instrument"], str(e["ids"]["trade_id"])) for e in read_journal(str(journal))
            if e["event"] == "sent" and e["ids"].get("kind") in ("trade", "correction", "cancelError")]


def as_sent(record) -> tuple[str, str, str]:
    """A clean Trade record as the journal names it (corrections and cancels by the original id)."""
    trade_id = record["trade_id"] if record["action"] == "new" else record["ref_trade_id"]
    return JOURNAL_KIND[record["action"]], record["symbol"], trade_id


def test_emulator_to_clean_topics_matches_the_journal(kafka_settings, tmp_path):
    journal = tmp_path / "journal.jsonl"
    env = {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "TICKPIPE_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix, "TICKPIPE_OPS_PORT": "0"}
    emulator = Child(tickpipe_command("emulate", "alpaca", "--rate", "100", "--journal", str(journal)),
                     "alpaca emulator", log_file=tmp_path / "emulator.log", env={"TICKPIPE_OPS_PORT": "0"})
    with process_child(kafka_settings, tmp_path, "process", providers=("alpaca",)):
        with emulator:
            producer_env = {**env, "TICKPIPE_ALPACA_URL": f"ws://127.0.0.1:{emulator.ready['port']}",
                            "TICKPIPE_ALPACA_KEY_ID": "PKE2E", "TICKPIPE_ALPACA_SECRET_KEY": "e2e-secret"}
            with Child(tickpipe_command("produce", "alpaca"), "alpaca producer", log_file=tmp_path / "producer.log",
                       env=producer_env) as producer:
                time.sleep(3)
                producer.signal(signal.SIGTERM)
                assert producer.process.wait(20) == 0
        sent = sent_trades(journal)  # the emulator has stopped: its journal is complete
        got = asyncio.run(consume(kafka_settings, [tick_topic("trade", kafka_settings.topic_prefix),
                                                   dlq_topic("alpaca", kafka_settings.topic_prefix)],
                                  want=len(sent), settle_s=1.0))
    trades = sorted((r for t, _, r, _ in got if r.name == "Trade"), key=lambda r: (r["frame_seq"], r["frame_index"]))
    assert len(sent) >= 40
    assert [as_sent(r) for r in trades] == sent[:len(trades)]
    assert len(trades) >= len(sent) - 5  # only trades sent while the producer was closing may be missing
    assert not [r for t, _, r, _ in got if r.name == "DeadLetter"]
    assert {(r["provider"], r["conn"]) for r in trades} == {("alpaca", "alpaca-0")}
    assert {r["channel"] for r in trades} <= {"t", "c", "x"} and "t" in {r["channel"] for r in trades}
    assert all(Decimal(r["price"]) > 0 and Decimal(r["size"]) > 0 for r in trades if r["action"] == "new")
    assert all(0 <= r["recv_time"] - r["event_time"] < 10 * 10**9 for r in trades)
