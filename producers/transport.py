"""The websocket transport (``websockets`` asyncio client) behind :class:`~tickpipe.producers.base.Transport`.

WebSocket ping/pong is done by the library (``producer.ping_interval_s``/``ping_timeout_s``),
which keeps reading, and so answering the server's pings, while the loop pauses for
back-pressure, until ``producer.ws_max_queue`` frames wait unread; then TCP pushes back.
permessage-deflate is negotiated when the server offers it. An HTTP 401/403 on the upgrade
is an :class:`AuthError` (permanent); any other refusal is a transient :class:`FeedError`.
:class:`QueueTransport` fits clients that call back per event (socket.io) into the same loop.
"""

from __future__ import annotations

import asyncio
from typing import Any, Mapping

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tickpipe.producers.base import AuthError, FeedError, TransportClosed


class WebSocketTransport:
    """A connected websocket; frames come back exactly as received (``str`` or ``bytes``)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def recv(self) -> str | bytes:
        try:
            return await self.ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def send(self, data: str | bytes) -> None:
        try:
            await self.ws.send(data)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code


def _closed(exc: ConnectionClosed) -> TransportClosed:
    frame = exc.rcvd or exc.sent
    return TransportClosed(frame.code if frame else 1006, frame.reason if frame else "no close frame")


async def open_websocket(url: str, loop_settings: Any, *, headers: Mapping[str, str] | None = None,
                         subprotocols: list[str] | None = None, **kwargs: Any) -> WebSocketTransport:
    """Connect to ``url`` with the loop's ping and size settings; extra ``kwargs`` go to ``websockets.connect``."""
    ping = loop_settings.ping_interval_s or None
    options: dict[str, Any] = dict(
        additional_headers=dict(headers or {}), subprotocols=subprotocols, open_timeout=loop_settings.connect_timeout_s,
        ping_interval=ping, ping_timeout=loop_settings.ping_timeout_s if ping else None,
        max_size=loop_settings.max_frame_bytes, max_queue=loop_settings.ws_max_queue, close_timeout=3, proxy=None)
    options.update(kwargs)
    try:
        ws = await connect(url, **options)
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise AuthError(f"websocket upgrade refused with HTTP {status}", permanent=True) from None
        raise FeedError(f"websocket upgrade refused with HTTP {status}") from None
    return WebSocketTransport(ws)


class QueueTransport:
    """A transport for clients that read on their own and call back per event (python-socketio).

    The adapter's callbacks call :meth:`push` with each received frame exactly as it should
    be recorded (for socket.io: the event as JSON text ``["event", data]``, content type
    ``CT_SOCKETIO``) and :meth:`closed` when the client disconnects. ``send``/``close`` are
    the client's own coroutines. A queue that outgrows ``max_frames`` (the loop is paused by
    back-pressure and the client cannot be paused) breaks the session: the ``session_end``
    marker says where, instead of frames vanishing unrecorded.
    """

    def __init__(self, send=None, close=None, max_frames: int = 10_000) -> None:
        self._send, self._close, self.max_frames = send, close, max_frames
        self._queue: asyncio.Queue = asyncio.Queue()
        self._ended: TransportClosed | None = None

    def push(self, frame: str | bytes) -> None:
        if self._ended is not None:
            return
        if self._queue.qsize() >= self.max_frames:
            self.closed(None, f"receive queue over {self.max_frames} frames while reads were paused")
            return
        self._queue.put_nowait(frame)

    def closed(self, code: int | None = None, reason: str = "disconnected") -> None:
        if self._ended is None:
            self._ended = TransportClosed(code, reason)
            self._queue.put_nowait(self._ended)

    async def recv(self) -> str | bytes:
        item = await self._queue.get()
        if isinstance(item, TransportClosed):
            self._queue.put_nowait(item)  # every later recv sees the end too
            raise TransportClosed(item.code, item.reason)
        return item

    async def send(self, data: str | bytes) -> None:
        if self._ended is not None:
            raise TransportClosed(self._ended.code, self._ended.reason)
        if self._send is None:
            raise FeedError("this transport sends through its client's own calls (emit), not raw frames")
        await self._send(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed(code, reason or "closed by us")
        if self._close is not None:
            await self._close()
