"""A provider's fetched raw records, bounded, in fetch order: what the fast path
(:mod:`tickpipe.processors.fastpath`) takes its batches from."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class RawRecordBuffer:
    """Fetched raw records of one provider, in fetch order, bounded; ``clear()`` on rebalance.

    Knows per partition the offset after the last record it buffered or handed out, so that
    a record fetched again (after a seek back) is not handed out twice.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._chunks: deque[tuple[Any, list]] = deque()  # (tp, records of one fetch of that tp)
        self._size = 0
        self._after_seen: dict[Any, int] = {}  # the offset after the last record buffered or handed out
        self._after_handed_out: dict[Any, int] = {}  # the offset after the last record handed out
        self._enough: asyncio.Event | None = None  # set when _size reaches _wanted
        self._wanted = 0
        self._room: asyncio.Event | None = None  # set while _size < capacity

    def __len__(self) -> int:
        return self._size

    def unseen(self, tp, records: list) -> tuple[list, list[tuple[int, int]]]:
        """``records`` past those already buffered or taken, and the offsets missing before
        them (``(first, last)`` ranges)."""
        expected = self._after_seen.get(tp)
        first, last = records[0].offset, records[-1].offset
        if (expected is None or first >= expected) and last - first == len(records) - 1:  # the usual case
            return records, [(expected, first - 1)] if expected is not None and first > expected else []
        kept, gaps = [], []
        for record in records:
            if expected is None or record.offset >= expected:
                if expected is not None and record.offset > expected:
                    gaps.append((expected, record.offset - 1))
                kept.append(record)
                expected = record.offset + 1
        return kept, gaps

    def add(self, tp, records: list) -> None:
        self._chunks.append((tp, records))
        self._size += len(records)
        self._after_seen[tp] = records[-1].offset + 1
        if self._wanted and self._size >= self._wanted and self._enough is not None:
            self._enough.set()

    def handed_out(self, pairs: list) -> None:
        """(tp, record) pairs taken are being processed: not to be handed out again, even when
        fetched again. (Pairs taken and then not processed come again after the next ``clear()``.)"""
        handed = self._after_handed_out
        for tp, record in pairs:
            handed[tp] = record.offset + 1

    def clear(self) -> None:
        """Drop everything buffered: those records come again from the committed offsets."""
        self._chunks.clear()
        self._size = 0
        self._after_seen = dict(self._after_handed_out)
        if self._room is not None:
            self._room.set()

    def forget(self, tps) -> None:
        """Partitions revoked: whatever comes from them next is new to this buffer."""
        for tp in tps:
            self._after_seen.pop(tp, None)
            self._after_handed_out.pop(tp, None)

    async def wait_for_room(self) -> None:
        while self._size >= self.capacity:
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            await self._room.wait()

    async def take(self, max_records: int, within_s: float) -> list[tuple[Any, Any]]:
        """(tp, record) pairs, at most ``max_records``: waits for a first record, then at most
        ``within_s`` for the batch to fill. May return nothing (cleared meanwhile)."""
        if not self._size:
            await self._wait_for(1, None)
        if self._size < max_records:
            await self._wait_for(max_records, within_s)
        return self._pop(max_records)

    async def _wait_for(self, count: int, timeout: float | None) -> None:
        if self._enough is None:
            self._enough = asyncio.Event()
        self._enough.clear()
        self._wanted = count
        try:
            async with asyncio.timeout(timeout):
                await self._enough.wait()
        except TimeoutError:
            pass
        finally:
            self._wanted = 0

    def _pop(self, max_records: int) -> list[tuple[Any, Any]]:
        batch: list[tuple[Any, Any]] = []
        chunks = self._chunks
        while chunks and len(batch) < max_records:
            tp, records = chunks[0]
            room = max_records - len(batch)
            if len(records) <= room:
                chunks.popleft()
            else:
                chunks[0] = (tp, records[room:])
                records = records[:room]
            batch.extend([(tp, record) for record in records])
        self._size -= len(batch)
        if self._room is not None and self._size < self.capacity:
            self._room.set()
        return batch
