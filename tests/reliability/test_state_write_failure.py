"""A state write the broker never takes leaves its batch unacknowledged.

Faust sends the state tables' changelog records without awaiting them and only logs a failed
one; acking the batch anyway would let a restarted worker restore a state older than the
outputs already delivered. Here the real Faust app of ``tickpipe process`` (``build_app``) on
its own embedded broker: one batch is saved, then the broker stops between a batch's outputs
being acknowledged and its state going out.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY

from tickpipe.admin import declare_topics
from tickpipe.broker import EmbeddedBroker
from tickpipe.commands.process import declare_state_topics
from tickpipe.envelope import RawRecord
from tickpipe.kafka import KafkaSettings
from tickpipe.processors.app import ProcessorSettings, build_app, normalizer_table_name, state_table_name
from tickpipe.processors.deadletter import Source
from tickpipe.processors.integrity.check import IntegrityCheck
from tickpipe.processors.statewrites import StateNotSaved
from tickpipe.topics import TopicSettings

PRICE = b'{"type":"price","data":{"date":"2021-09-29T09:35:%02d","price":3.04,"volume":1,"symbol":"NZB.NZ"}}'


def batch(first: int, count: int = 3) -> list:
    out = []
    for seq in range(first, first + count):
        raw = RawRecord("financefeast", "ff-0", "s1", seq, 1_700_000_000_000_000_000 + seq, PRICE % seq)
        out.append((raw.key, raw.payload, raw.headers(), Source("raw.financefeast", 0, seq)))
    return out


def state_write_errors(app_id: str) -> float:
    return sum(REGISTRY.get_sample_value("tickpipe_processor_state_write_errors_total",
                                         {"topic": f"{app_id}-{table('financefeast')}-changelog"}) or 0
               for table in (state_table_name, normalizer_table_name))


@pytest.mark.timeout(120)
async def test_a_batch_whose_state_write_fails_is_never_acknowledged(tmp_path):
    broker = EmbeddedBroker(log_file=tmp_path / "tansu.log").start()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix=f"s{uuid.uuid4().hex[:6]}.")
    settings = ProcessorSettings(app_id=f"sw-{uuid.uuid4().hex[:6]}", producer_request_timeout_s=2.0,
                                 data_dir=str(tmp_path / "faust"))
    topics = TopicSettings()
    app = None
    try:
        await declare_topics(kafka, topics)
        await declare_state_topics(kafka, settings, ["financefeast"], topics)
        app = build_app(kafka, settings, ["financefeast"], topics,
                        checks_factory=lambda provider, store: [IntegrityCheck(provider, store=store)])
        await app.producer.start()
        processor = app.tickpipe_processors["financefeast"]

        count, saved = await processor.process_pipelined(batch(1))
        await asyncio.wait_for(saved, 30)                     # the broker took the state: ackable
        assert count == 3

        errors_before = state_write_errors(settings.app_id)
        count, saved = await processor.process_pipelined(batch(4))   # outputs acknowledged, state not sent yet
        broker.stop(0.5)                                      # no await in between: the state write cannot get out
        with pytest.raises(StateNotSaved, match="state write"):
            await asyncio.wait_for(saved, 30)
        assert state_write_errors(settings.app_id) > errors_before
        # a later batch's state can be saved by nobody's account: it is not ackable either
        later = processor._state_saved_in_order()
        with pytest.raises(StateNotSaved, match="earlier batch"):
            await asyncio.wait_for(later, 30)
    finally:
        if app is not None:
            await app.producer.stop()
        broker.stop(0.5)
