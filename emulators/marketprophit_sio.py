"""python-socketio 4.x (Engine.IO protocol 3) on Python 3.11 and aiohttp: two small adapters.

Market Prophit's server was socket.io 1.x, i.e. Engine.IO protocol 3 (see the protocol
reference, section 3.1); python-socketio 4.x / python-engineio 3.x is the Python stack
that speaks it. Those releases predate Python 3.11, so:

* :class:`Py311Manager` -- ``AsyncManager.emit`` hands bare coroutines to
  ``asyncio.wait``, which Python 3.11 refuses; this emits to each participant in turn.
* :class:`TrackedWebSocket` -- the aiohttp websocket driver, remembering each Engine.IO
  session's aiohttp socket so the emulator can end it abruptly (a close code, or a TCP
  abort with no close frame) and cap client message size.
* :class:`ProphitServer` -- refuses a bad token the socket.io 1.x way (an ERROR packet), and
  a socket.io packet that does not decode (``42not json``, ``49[]``, ``42{}``) gets an
  ``err`` event naming the problem instead of a library traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Callable

import socketio
import socketio.packet
from aiohttp import web
from engineio.async_drivers import aiohttp as eio_aiohttp


class Py311Manager(socketio.AsyncManager):
    async def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None, **kwargs):
        if namespace not in self.rooms or room not in self.rooms[namespace]:
            return
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        for sid in list(self.get_participants(namespace, room)):
            if sid not in skip:
                ack = self._generate_ack_id(sid, namespace, callback) if callback is not None else None
                await self.server._emit_internal(sid, event, data, namespace, ack)


class ProphitServer(socketio.AsyncServer):
    """The socket.io server: handshake check as socket.io 1.x middleware did, forgiving decoding.

    ``check(environ)`` returns ``(None, expires_at)`` to accept or ``(error, 0)`` to refuse.
    A refusal is an Engine.IO session that gets the socket.io ERROR packet ``44<error>`` and
    is closed (socket.io 1.x middleware, ``socketio-jwt``), or, with ``refuse_with_http``,
    HTTP 401 on the handshake request (python-socketio's own way).
    """

    def __init__(self, check: Callable, refuse_with_http: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.check, self.refuse_with_http = check, refuse_with_http

    async def _handle_eio_connect(self, sid, environ):
        problem, expires_at = await self.check(environ)
        if problem is None:
            environ["tickpipe.expires_at"] = expires_at
            return await super()._handle_eio_connect(sid, environ)
        if self.refuse_with_http:
            return problem
        await self._send_packet(sid, socketio.packet.Packet(socketio.packet.ERROR, data=problem))
        asyncio.ensure_future(self._close_refused(sid))
        return None

    async def _close_refused(self, sid: str) -> None:
        await asyncio.sleep(0.2)  # let the client fetch the ERROR packet first
        with contextlib.suppress(KeyError, ValueError):
            await self.eio.disconnect(sid)

    async def _handle_eio_message(self, sid, data):
        try:
            await super()._handle_eio_message(sid, data)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            problem = f"Bad socket.io packet ({type(exc).__name__}): {str(data)[:60]}"
            await self._emit_internal(sid, "err", {"message": problem}, "/", None)


def tracked_websocket(on_open: Callable[[str, web.WebSocketResponse, web.Request], None],
                      max_msg_size: int) -> type:
    """A driver class calling ``on_open(sid, ws, request)`` for every websocket transport."""

    class TrackedWebSocket(eio_aiohttp.WebSocket):
        async def __call__(self, environ):
            request = environ["aiohttp.request"]
            self._sock = web.WebSocketResponse(max_msg_size=max_msg_size)
            await self._sock.prepare(request)
            self.environ = environ
            on_open(self.handler.__self__.sid, self._sock, request)
            await self.handler(self)
            return self._sock

    return TrackedWebSocket


def install_tracked_websocket(server: socketio.AsyncServer, on_open, max_msg_size: int) -> None:
    # engineio keeps the driver module's own dict: copy it so other servers keep theirs
    server.eio._async = {**server.eio._async, "websocket": tracked_websocket(on_open, max_msg_size)}
