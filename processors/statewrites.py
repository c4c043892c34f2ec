"""The state tables' changelog writes, awaited: a batch is acked only once the broker took its state.

Faust sends a table's changelog records "soon" (a buffer its own task drains) and awaits none of
them: its ``flush`` can return while a record is still on its way, and a failed one (aiokafka
gave up after ``producer_request_timeout``) is only logged. :class:`StateWrites` keeps the
``FutureMessage`` of every changelog write of the tables it tracks; the batch processor awaits
those of a batch (``processors/batch.py``), and a failure raises :class:`StateNotSaved`: that
batch and every later one stay unacked, the worker stops, and its successor restores the last
saved state and reads them again.
"""

from __future__ import annotations

import asyncio

from tickpipe.logs import get_logger
from tickpipe.processors.metrics import STATE_WRITE_ERRORS

log = get_logger("tickpipe.processors.statewrites")


class StateNotSaved(Exception):
    """A state write failed: the batches it vouched for must not be acknowledged."""


class StateWrites:
    """The changelog writes of the tracked Faust tables not yet awaited."""

    def __init__(self) -> None:
        self._pending: list[asyncio.Future] = []

    def track(self, table):
        """Keep the future of every changelog write ``table`` makes (sets and deletes); returns it."""
        send = table.send_changelog

        def send_and_keep(*args, **kwargs):
            fut = send(*args, **kwargs)
            self._pending.append(fut)
            return fut

        table.send_changelog = send_and_keep
        return table

    async def settle(self) -> None:
        """Await the writes made so far; raise :class:`StateNotSaved` if the broker refused any."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        results = await asyncio.gather(*pending, return_exceptions=True)
        failed = [(fut, exc) for fut, exc in zip(pending, results) if isinstance(exc, BaseException)]
        if not failed:
            return
        for fut, exc in failed:
            topic = fut.message.channel.get_topic_name()
            STATE_WRITE_ERRORS.labels(topic).inc()
            log.error("state write failed", topic=topic, error=f"{type(exc).__name__}: {exc}")
        exc = failed[-1][1]
        raise StateNotSaved(f"{len(failed)} state write(s) failed: {type(exc).__name__}: {exc}")
