"""Test helpers for the Alpaca emulator: start one, and a small real websocket client for it."""

from __future__ import annotations

import asyncio
import contextlib
import json

import msgpack
import websockets

from tickpipe.emulators.alpaca import AlpacaEmulator, AlpacaEmulatorSettings
from tickpipe.emulators.base import EmulatorOptions
from tickpipe.emulators.faults import FaultPlan
from tickpipe.emulators.journal import read_journal

GARBAGE = "<undecodable frame>"


@contextlib.asynccontextmanager
async def running(rate: float = 200, faults: str = "", journal=None, seed: int = 1, symbols=(), **settings):
    options = EmulatorOptions(rate=rate, seed=seed, symbols=tuple(symbols), faults=FaultPlan.parse(faults),
                              journal=str(journal) if journal else None,
                              credentials=AlpacaEmulatorSettings(**settings))
    async with AlpacaEmulator(options) as emu:
        yield emu


def journal_lines(emu: AlpacaEmulator) -> list[dict]:
    emu.journal.flush()
    return read_journal(emu.journal.path)


class Client:
    """A v2/crypto client in JSON or msgpack mode (messages decoded; frames that do not decode = GARBAGE)."""

    def __init__(self, ws, use_msgpack: bool) -> None:
        self.ws, self.msgpack = ws, use_msgpack
        self.pending: list = []

    @classmethod
    async def open(cls, emu, path: str = "/v2/iex", use_msgpack: bool = False, headers=None, **kw) -> "Client":
        hdrs = dict(headers or {})
        if use_msgpack:
            hdrs["Content-Type"] = "application/msgpack"
        # An unbounded queue: with a full one the library stops reading, so a close
        # handshake behind unread data frames would wait for its 10 s timeout.
        kw.setdefault("max_queue", None)
        ws = await websockets.connect(emu.ws_url(path), additional_headers=hdrs, **kw)
        return cls(ws, use_msgpack)

    async def close(self) -> None:
        await self.ws.close()

    async def send(self, obj) -> None:
        await self.ws.send(msgpack.packb(obj) if self.msgpack else json.dumps(obj))

    async def frame(self, timeout: float = 5.0):
        """One frame, decoded (a list of messages), or GARBAGE."""
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        try:
            msgs = msgpack.unpackb(raw) if self.msgpack else json.loads(raw)
        except Exception:
            return GARBAGE
        if self.msgpack and isinstance(raw, str) or not self.msgpack and isinstance(raw, bytes):
            return GARBAGE
        return msgs if isinstance(msgs, list) else GARBAGE

    async def recv(self, timeout: float = 5.0):
        """The next message (frames flattened), or GARBAGE for a frame that does not decode."""
        while not self.pending:
            frame = await self.frame(timeout)
            self.pending = [frame] if frame == GARBAGE else list(frame)
        return self.pending.pop(0)

    async def control(self, timeout: float = 5.0) -> dict:
        """The next control message (success/error/subscription), skipping data."""
        while True:
            msg = await self.recv(timeout)
            if msg != GARBAGE and msg.get("T") in ("success", "error", "subscription"):
                return msg

    async def login(self, key: str = "PKTEST", secret: str = "s3cret") -> None:
        assert await self.recv() == {"T": "success", "msg": "connected"}
        await self.send({"action": "auth", "key": key, "secret": secret})
        assert await self.recv() == {"T": "success", "msg": "authenticated"}

    async def subscribe(self, **channels) -> dict:
        await self.send({"action": "subscribe", **channels})
        return await self.control()

    async def collect(self, count: int, kinds=("t",), timeout: float = 5.0) -> list:
        """Messages until ``count`` of the given ``T`` kinds have arrived (everything else too, in order)."""
        got, seen = [], 0
        while seen < count:
            msg = await self.recv(timeout)
            got.append(msg)
            seen += msg != GARBAGE and msg.get("T") in kinds
        return got


def trades_of(msgs: list, symbol: str | None = None) -> list[dict]:
    return [m for m in msgs if m != GARBAGE and m.get("T") == "t" and symbol in (None, m["S"])]
