"""The live session the loop hands to an adapter: sends, and reads that record every frame verbatim."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import orjson

from tickpipe.producers.base import FeedError, Transport, dumps

if TYPE_CHECKING:
    from tickpipe.producers.loop import ConnectionLoop


class FeedStale(FeedError):
    """No frame arrived within ``stale_after_s``."""


class LiveSession:
    """The :class:`~tickpipe.producers.base.Session` the loop hands to its adapter."""

    def __init__(self, loop: ConnectionLoop, transport: Transport, session_id: str, attempt: int) -> None:
        self._loop, self.transport, self.session_id, self.attempt = loop, transport, session_id, attempt
        self.settings = loop.adapter.settings
        self.frames = 0
        self.reading_since = time.monotonic()  # when reads began, or resumed after a back-pressure pause

    async def send(self, data: str | bytes) -> None:
        await self.transport.send(data)

    async def send_json(self, obj) -> None:
        await self.transport.send(dumps(obj))

    async def recv(self, timeout: float | None = None) -> str | bytes:
        loop = self._loop
        await loop.sink.wait_for_room()
        limit = timeout if timeout is not None else loop.settings.stale_after_s
        try:
            async with asyncio.timeout(limit):
                frame = await self.transport.recv()
        except TimeoutError:
            raise FeedStale(f"no frame for {limit:g}s") from None
        self.frames += 1
        loop.recorder.frame(frame, loop.adapter.content_type_of(frame))
        return frame

    async def next_frame(self) -> str | bytes:
        """The connection loop's read: like :meth:`recv` without a timer of its own (the loop's
        staleness watchdog compares the last frame's time with ``stale_after_s`` instead)."""
        loop = self._loop
        if await loop.sink.wait_for_room():
            self.reading_since = time.monotonic()  # a pause is not a silent feed
        frame = await self.transport.recv()
        self.frames += 1
        loop.recorder.frame(frame, loop.adapter.content_type_of(frame))
        return frame

    async def recv_json(self, timeout: float | None = None):
        frame = await self.recv(timeout)
        try:
            return orjson.loads(frame)
        except orjson.JSONDecodeError:
            raise FeedError(f"expected a JSON frame, got {len(frame)} bytes that are not JSON") from None
