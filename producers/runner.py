"""One producer: adapter + shared loop + Kafka sink + control follower, run until ``stop``.

    producer = Producer(adapter, kafka_settings, conn_id="alpaca-0")
    ops.add_readiness("feed", producer.ready)
    code = await producer.run(stop)       # 0: everything accepted reached Kafka
"""

from __future__ import annotations

import asyncio

from tickpipe.admin import declare_topics
from tickpipe.kafka import KafkaSettings
from tickpipe.logs import get_logger
from tickpipe.producers.base import FeedAdapter
from tickpipe.producers.control import ControlFollower
from tickpipe.producers.loop import ConnectionLoop
from tickpipe.producers.recorder import Recorder
from tickpipe.producers.resume import resume_seq
from tickpipe.producers.settings import ProducerSettings
from tickpipe.producers.sink import KafkaSink
from tickpipe.topics import TopicSettings, raw_topic

log = get_logger("tickpipe.producer")


def default_conn_id(provider: str) -> str:
    return f"{provider}-0"


class Producer:
    def __init__(self, adapter: FeedAdapter, kafka: KafkaSettings, conn_id: str | None = None,
                 settings: ProducerSettings | None = None, follow_control: bool = True,
                 topic_settings: TopicSettings | None = None) -> None:
        self.adapter, self.kafka = adapter, kafka
        self.topic_settings = topic_settings or TopicSettings()
        self.provider = adapter.provider
        self.settings = settings or adapter.loop_settings
        self.conn_id = conn_id or default_conn_id(self.provider)
        self.topic = raw_topic(self.provider, kafka.topic_prefix)
        self.recorder = Recorder(self.provider, self.conn_id)
        self.sink = KafkaSink(kafka, self.settings, self.provider, self.topic, self.recorder.new_loss)
        self.recorder.attach(self.sink)
        self.loop = ConnectionLoop(adapter, self.recorder, self.sink, self.settings)
        self.control = ControlFollower(kafka, self.provider, self.conn_id, self.loop.request_resync) if follow_control else None

    async def _declare_topics(self) -> None:
        """Create what the catalogue declares and the broker lacks, so nothing is auto-created with
        the broker's own partition count. Kafka being away is not fatal here: the sink buffers."""
        try:
            await asyncio.wait_for(declare_topics(self.kafka, self.topic_settings), self.settings.resume_timeout_s)
        except Exception as exc:
            log.error("could not declare the topics; producing anyway", provider=self.provider,
                      error=f"{type(exc).__name__}: {exc}")

    def ready(self) -> tuple[bool, str]:
        return self.loop.ready()

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop``; then unsubscribe, close, flush. 0 if nothing accepted was lost."""
        log.info("producer starting", provider=self.provider, conn=self.conn_id, topic=self.topic,
                 endpoint=self.adapter.endpoint())
        if self.settings.declare_topics:
            await self._declare_topics()
        if self.settings.resume_seq and self.recorder.seq == 0:
            self.recorder.seq = await resume_seq(self.kafka, self.topic, self.conn_id, self.settings.resume_timeout_s)
        await self.sink.start()
        control = asyncio.ensure_future(self.control.run()) if self.control else None
        try:
            await self.loop.run(stop)
        finally:
            if control:
                control.cancel()
                await asyncio.gather(control, return_exceptions=True)
            undelivered = await self.sink.close()
        log.info("producer stopped", provider=self.provider, conn=self.conn_id, frames=self.recorder.seq,
                 undelivered=undelivered)
        return 0 if undelivered == 0 else 1
