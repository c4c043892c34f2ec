"""The bounded produce buffer: records waiting for Kafka, dropped oldest-first with exact accounting.

The bound counts records (and bytes) buffered *and* in flight. Past it, the oldest buffered
*frame* is dropped (reason ``buffer_full``); markers are never dropped. A frame Kafka can never
take (larger than the broker allows) is dropped too (reason ``too_large``). Each drop is added to an open
:class:`PendingLoss`, itself a record in the buffer (appended when the first frame of an
episode is dropped, so its ``tp-seq`` keeps the topic in order). It is finalized into a
``loss`` marker when it is taken for sending; drops after that open a new one.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from tickpipe.envelope import CT_JSON, KIND_FRAME, KIND_LOSS, RawRecord, encode_marker


@dataclass
class PendingLoss:
    """A loss marker still collecting drops: becomes a RawRecord when taken."""

    provider: str
    conn: str
    session: str
    seq: int
    ranges: list[list[int]] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    frames: int = 0
    bytes: int = 0
    first_recv_ns: int = 0
    last_recv_ns: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, record: RawRecord, reason: str = "buffer_full") -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if self.ranges and self.ranges[-1][1] + 1 == record.seq:
            self.ranges[-1][1] = record.seq
        else:
            self.ranges.append([record.seq, record.seq])
        if record.session not in self.sessions:
            self.sessions.append(record.session)
        self.frames += 1
        self.bytes += len(record.payload)
        self.first_recv_ns = self.first_recv_ns or record.recv_ns
        self.last_recv_ns = record.recv_ns

    def to_record(self) -> RawRecord:
        payload = encode_marker(KIND_LOSS, reason=",".join(sorted(self.reasons)), reasons=self.reasons,
                                dropped_frames=self.frames, dropped_bytes=self.bytes,
                                ranges=self.ranges, sessions=self.sessions, first_recv_ns=self.first_recv_ns,
                                last_recv_ns=self.last_recv_ns)
        return RawRecord(self.provider, self.conn, self.session, self.seq, time.time_ns(), payload, CT_JSON, KIND_LOSS)


Item = RawRecord | PendingLoss
LOSS_MARKER_SIZE = 512  # what a loss marker counts for against the byte bound
NOTHING: tuple = ()  # append()'s answer when nothing was dropped


def item_size(item: Item) -> int:
    if isinstance(item, PendingLoss) or item.kind == KIND_LOSS:
        return LOSS_MARKER_SIZE
    return len(item.payload) + 64


class ProduceBuffer:
    """FIFO of records for Kafka. ``new_loss()`` makes an empty :class:`PendingLoss` with a fresh ``tp-seq``."""

    def __init__(self, max_frames: int, max_bytes: int, new_loss: Callable[[], PendingLoss]) -> None:
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self._new_loss = new_loss
        self._items: deque[Item] = deque()
        self._open_loss: PendingLoss | None = None
        self.bytes = 0
        self.inflight_count = 0
        self.inflight_bytes = 0
        self.dropped_frames = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def total_count(self) -> int:
        return len(self._items) + self.inflight_count

    @property
    def total_bytes(self) -> int:
        return self.bytes + self.inflight_bytes

    def fill(self) -> float:
        return max(self.total_count / self.max_frames, self.total_bytes / self.max_bytes)

    def oldest_recv_ns(self) -> int | None:
        """Receive time of the oldest buffered record (None if it is a loss marker still open, or none)."""
        if not self._items:
            return None
        first = self._items[0]
        return None if isinstance(first, PendingLoss) else first.recv_ns

    def append(self, record: RawRecord) -> list[RawRecord] | tuple:
        """Add a record; returns the frames dropped to stay within the bound (oldest first)."""
        self._items.append(record)
        self.bytes += item_size(record)
        if len(self._items) + self.inflight_count <= self.max_frames and self.bytes + self.inflight_bytes <= self.max_bytes:
            return NOTHING
        dropped: list[RawRecord] = []
        while self.total_count > self.max_frames or self.total_bytes > self.max_bytes:
            victim = self._drop_oldest_frame()
            if victim is None:
                break  # only markers left: they are never dropped
            dropped.append(victim)
        return dropped

    def _drop_oldest_frame(self) -> RawRecord | None:
        index = next((i for i, it in enumerate(self._items) if isinstance(it, RawRecord) and it.kind == KIND_FRAME), None)
        if index is None:
            return None
        victim = self._items.popleft() if index == 0 else self._pop_at(index)
        self.bytes -= item_size(victim)
        self._account(victim, "buffer_full")
        return victim

    def _account(self, victim: RawRecord, reason: str) -> None:
        if self._open_loss is None:
            self._open_loss = self._new_loss()
            self._items.append(self._open_loss)
            self.bytes += item_size(self._open_loss)
        self._open_loss.add(victim, reason)
        self.dropped_frames += 1

    def reject(self, record: RawRecord) -> None:
        """An in-flight frame Kafka will never take: settle it and account it as lost (``too_large``)."""
        self.settle([record])
        self._account(record, "too_large")

    def _pop_at(self, index: int) -> Item:
        item = self._items[index]
        del self._items[index]
        return item

    def take(self, limit: int) -> list[RawRecord]:
        """Move up to ``limit`` records to in flight, finalizing loss markers."""
        items = self._items
        out: list[RawRecord] = [items.popleft() for _ in range(min(limit, len(items)))]
        size = sum(map(item_size, out))
        self.bytes -= size
        self.inflight_count += len(out)
        self.inflight_bytes += size
        for n, item in enumerate(out):
            if isinstance(item, PendingLoss):
                if item is self._open_loss:
                    self._open_loss = None
                out[n] = item.to_record()
        return out

    def settle(self, records: list[RawRecord]) -> None:
        """These in-flight records are done (delivered)."""
        self.inflight_count -= len(records)
        self.inflight_bytes -= sum(map(item_size, records))

    def give_back(self, records: list[RawRecord]) -> None:
        """In-flight records that failed go back to the head, in their order."""
        self.settle(records)
        for r in reversed(records):
            self._items.appendleft(r)
            self.bytes += item_size(r)
