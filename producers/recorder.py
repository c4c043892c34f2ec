"""Stamping: turn received frames and session events into raw records with the envelope headers.

One :class:`Recorder` per connection id: it owns the ``tp-seq`` counter (from 1, never reset
while the process lives; markers count too) and the current session id.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Protocol

from tickpipe.envelope import CT_JSON, KIND_FRAME, RawRecord, encode_marker
from tickpipe.producers import metrics
from tickpipe.producers.buffer import PendingLoss


class RecordSink(Protocol):
    def put(self, record: RawRecord) -> None: ...

    async def wait_for_room(self) -> bool | None:
        """Return once there is room; truthy if reads had to pause (the staleness watchdog then
        counts from the resumption, not from the last frame)."""


COUNT_EVERY_S = 0.05  # the received counters are added up per frame and reach Prometheus this often


def new_session_id() -> str:
    return uuid.uuid4().hex[:16]


class Recorder:
    def __init__(self, provider: str, conn: str) -> None:
        self.provider, self.conn = provider, conn
        self.seq = 0
        self.session = ""
        self.sink: RecordSink | None = None
        self.last_frame_monotonic = time.monotonic()
        self._received = metrics.frames_received.labels(provider)
        self._received_bytes = metrics.bytes_received.labels(provider)
        self._uncounted_frames = self._uncounted_bytes = 0
        self._count_scheduled = False
        metrics.seconds_since_last_frame.labels(provider).set_function(
            lambda: time.monotonic() - self.last_frame_monotonic)

    def attach(self, sink: RecordSink) -> None:
        self.sink = sink

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def new_session(self) -> str:
        self.session = new_session_id()
        return self.session

    def frame(self, frame: str | bytes, content_type: str) -> RawRecord:
        """Record one received frame verbatim (text frames as their UTF-8 bytes)."""
        now_ns = time.time_ns()
        self.last_frame_monotonic = time.monotonic()
        payload = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else bytes(frame)
        self.seq += 1
        record = RawRecord(self.provider, self.conn, self.session, self.seq, now_ns, payload, content_type, KIND_FRAME)
        self._uncounted_frames += 1
        self._uncounted_bytes += len(payload)
        if not self._count_scheduled:
            self._schedule_count()
        self._put(record)
        return record

    def _schedule_count(self) -> None:
        try:
            asyncio.get_running_loop().call_later(COUNT_EVERY_S, self.count_received)
        except RuntimeError:  # no event loop (a replay, a test): count at once
            self.count_received()
            return
        self._count_scheduled = True

    def count_received(self) -> None:
        """Add the frames received since the last call to the Prometheus counters."""
        self._count_scheduled = False
        frames, nbytes = self._uncounted_frames, self._uncounted_bytes
        self._uncounted_frames = self._uncounted_bytes = 0
        if frames:
            self._received.inc(frames)
            self._received_bytes.inc(nbytes)

    def marker(self, kind: str, **fields) -> RawRecord:
        record = RawRecord(self.provider, self.conn, self.session, self._next(), time.time_ns(),
                           encode_marker(kind, **fields), CT_JSON, kind)
        self._put(record)
        return record

    def new_loss(self) -> PendingLoss:
        """An empty loss marker with the next ``tp-seq`` (the buffer fills it)."""
        return PendingLoss(self.provider, self.conn, self.session, self._next())

    def _put(self, record: RawRecord) -> None:
        if self.sink is None:
            raise RuntimeError("recorder has no sink attached")
        self.sink.put(record)
