"""Consumer lag of the processor's group: raw records not yet committed, summed over partitions.

The committed offsets come from a consumer that carries the processor's group id but never
subscribes, so it never joins the group (no rebalance): ``committed()`` only asks the
group coordinator. (The admin client's group-offsets call does not decode Tansu's answer.)
"""

from __future__ import annotations

import asyncio

from tickpipe.logs import get_logger

log = get_logger("tickpipe.demo")


class GroupLag:
    def __init__(self, kafka, group: str, raw_topics: list[str]) -> None:
        self.kafka, self.group, self.raw_topics = kafka, group, raw_topics
        self.consumer = None

    async def start(self) -> "GroupLag":
        from aiokafka import AIOKafkaConsumer

        from tickpipe.kafka import client_kwargs, start_client

        self.consumer = AIOKafkaConsumer(**client_kwargs(self.kafka), group_id=self.group, enable_auto_commit=False)
        await start_client(self.consumer, self.kafka)
        return self

    async def lag(self) -> int | None:
        """Records the group has not committed yet (None: unknown right now)."""
        from aiokafka import TopicPartition

        consumer = self.consumer
        try:
            tps = [TopicPartition(t, p) for t in self.raw_topics for p in sorted(consumer.partitions_for_topic(t) or ())]
            if len(tps) < len(self.raw_topics):
                await consumer._client.force_metadata_update()   # the consumer knows only topics it has seen
                return None
            ends = await consumer.end_offsets(tps)
            committed = await asyncio.gather(*(consumer.committed(tp) for tp in tps))
        except Exception as exc:  # noqa: BLE001 - the view shows "?" and goes on
            log.debug("lag unknown", error=str(exc))
            return None
        return sum(max(0, ends.get(tp, 0) - (done or 0)) for tp, done in zip(tps, committed))

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
