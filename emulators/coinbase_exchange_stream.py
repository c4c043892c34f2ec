"""The Coinbase Exchange emulator's shared stream: one engine, fanned out to every subscribed socket.

Each engine event goes, per session, to the channels that carry it: the full-channel object
(``full``; ``match`` also on ``matches``), its ``ticker``, its ``l2update`` (``level2``), its
level3 array; ``level2_50`` batches and ``ticker_1000`` are flushed on their own timers.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import orjson

from tickpipe.emulators import coinbase_exchange_frames as frames
from tickpipe.emulators.base import paced
from tickpipe.emulators.coinbase_exchange_engine import Event, ExchangeEngine
from tickpipe.emulators.coinbase_exchange_session import Session


class ExchangeStream:
    def __init__(self, engine: ExchangeEngine, sessions: set[Session], rate: float, queue_cap: int) -> None:
        self.engine, self.sessions, self.rate, self.queue_cap = engine, sessions, rate, queue_cap
        self._l2_batch: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
        self._l2_batch_time: dict[str, str] = {}
        self._ticker_batch_sent: dict[str, int] = {}

    async def run(self) -> None:
        """Step the engine at ``rate`` full-channel events per second while anyone is connected."""
        rate = self.rate
        async for due in paced(rate):
            if not self.sessions:
                await asyncio.sleep(0.05)   # nobody listens: no events, no busy loop at rate 0
                continue
            emitted = 0
            while emitted < due:
                now = time.time_ns()
                for event in self.engine.step(now):
                    self.fan_out(event, now)
                    emitted += 1
            if rate <= 0:
                await self._backpressure()

    async def _backpressure(self) -> None:
        limit = self.queue_cap // 2
        while any(s.queue.qsize() > limit and s.stalled_until < time.monotonic() for s in self.sessions):
            await asyncio.sleep(0.002)

    def fan_out(self, event: Event, now_ns: int) -> None:
        msg, pid = event.msg, event.product
        text = orjson.dumps(msg).decode()
        ids = {**frames.ids(msg, msg["type"]), "event_ns": now_ns}
        ticker = orjson.dumps(event.ticker).decode() if event.ticker else None
        l2 = {"type": "l2update", "product_id": pid, "changes": [list(c) for c in event.l2], "time": msg["time"]}
        l3 = frames.level3_row(msg)
        for s in list(self.sessions):
            if s.wants("full", pid) or (msg["type"] == "match" and s.wants("matches", pid)):
                s.send(text, ids, faultable=True)
            if ticker and s.wants("ticker", pid):
                s.send(ticker, {**ids, "kind": "ticker"}, faultable=True)
            if event.l2 and s.wants("level2", pid):
                s.send(l2, {"kind": "l2update", "instrument": pid, "event_ns": now_ns})
            if s.wants("level3", pid):
                s.send(l3, {**ids, "kind": f"level3:{l3[0]}"}, faultable=True)
        for side, price, size in event.l2:
            self._l2_batch[pid][(side, price)] = size
            self._l2_batch_time[pid] = msg["time"]

    def flush_level2_batch(self) -> None:
        for pid, changes in list(self._l2_batch.items()):
            if not changes:
                continue
            update = {"type": "l2update", "product_id": pid, "changes": [[s, p, z] for (s, p), z in changes.items()],
                      "time": self._l2_batch_time[pid]}
            changes.clear()
            for s in list(self.sessions):
                if s.wants("level2_50", pid):
                    s.send(update, {"kind": "l2update", "instrument": pid})

    def flush_ticker_batch(self) -> None:
        for pid, p in self.engine.products.items():
            ticker = p.last_ticker
            if ticker is None or self._ticker_batch_sent.get(pid) == ticker["trade_id"]:
                continue
            self._ticker_batch_sent[pid] = ticker["trade_id"]
            for s in list(self.sessions):
                if s.wants("ticker_1000", pid):
                    s.send(ticker, frames.ids(ticker, "ticker_batch"))


async def every(period: float, action) -> None:
    while True:
        await asyncio.sleep(period)
        action()
