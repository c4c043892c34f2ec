"""Fidelity: Alpaca's own SDK (alpaca-py) pointed at the emulator by ``url_override`` only.

alpaca-py connects in msgpack mode, authenticates with a message, subscribes (possibly in
continuation frames) and parses every message into its pydantic models; ``run()`` blocks,
so it runs in a thread as an application would run it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import msgpack
import pytest

from tests.emulators.alpaca_support import journal_lines, running

pytest.importorskip("alpaca", reason="alpaca-py is a test dependency: pip install alpaca-py")
from alpaca.data.live import CryptoDataStream, StockDataStream  # noqa: E402

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Collector:
    """Handlers for the SDK's thread; ``done`` is set in the test's loop once ``enough`` says so."""

    def __init__(self, enough) -> None:
        self.got: dict[str, list] = {}
        self.enough = enough
        self.loop = asyncio.get_running_loop()
        self.done = asyncio.Event()

    def handler(self, kind: str):
        async def handle(msg) -> None:
            self.got.setdefault(kind, []).append(msg)
            if self.enough(self.got):
                self.loop.call_soon_threadsafe(self.done.set)
        return handle


async def run_until(stream, collector: Collector, timeout: float = 15.0) -> None:
    thread = asyncio.ensure_future(asyncio.to_thread(stream.run))
    try:
        await asyncio.wait_for(collector.done.wait(), timeout)
    finally:
        await asyncio.to_thread(stream.stop)
        await asyncio.wait_for(thread, 15)


def micros(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


async def test_stock_stream_models_match_what_the_emulator_sent(tmp_path):
    async with running(rate=200, bar_interval_s=0.3, journal=tmp_path / "j.jsonl") as emu:
        c = Collector(lambda g: len(g.get("trade", [])) >= 10 and len(g.get("quote", [])) >= 5 and g.get("bar"))
        stream = StockDataStream("PKSDKTEST", "sdk-secret", url_override=emu.ws_url("/v2/iex"))
        stream.subscribe_trades(c.handler("trade"), "AAPL")
        stream.subscribe_quotes(c.handler("quote"), "AAPL")
        stream.subscribe_bars(c.handler("bar"), "AAPL")
        await run_until(stream, c)
        lines = journal_lines(emu)
    assert lines[0]["encoding"] == "msgpack"
    sent = {e["ids"]["trade_id"]: e["ids"]["event_ns"] for e in lines if e["event"] == "sent"
            and e["ids"]["kind"] == "trade"}
    trades = c.got["trade"]
    assert [t.id for t in trades] == list(range(trades[0].id, trades[0].id + len(trades)))
    for t in trades:
        assert t.symbol == "AAPL" and t.price > 0 and t.size > 0 and t.exchange and t.conditions
        assert micros(t.timestamp) == sent[t.id] // 1000
    for q in c.got["quote"]:
        assert q.symbol == "AAPL" and q.bid_price < q.ask_price and q.bid_size > 0
    for b in c.got["bar"]:
        assert b.symbol == "AAPL" and b.low <= b.open <= b.high and b.trade_count >= 1 and b.vwap > 0


async def test_stock_stream_raw_messages_arrive_unmodified(tmp_path):
    async with running(rate=200, journal=tmp_path / "j.jsonl") as emu:
        c = Collector(lambda g: len(g.get("trade", [])) >= 15)
        stream = StockDataStream("PKRAWTEST", "sdk-secret", raw_data=True, url_override=emu.ws_url("/v2/sip"))
        stream.subscribe_trades(c.handler("trade"), "MSFT", "AMD")
        await run_until(stream, c)
        lines = journal_lines(emu)
    sent = [(e["ids"]["instrument"], e["ids"]["trade_id"], e["ids"]["event_ns"]) for e in lines
            if e["event"] == "sent" and e["ids"]["kind"] == "trade"]
    got = c.got["trade"]
    assert [(m["S"], m["i"], m["t"].to_unix_nano()) for m in got] == sent[:len(got)]
    for m in got:
        assert list(m) == ["T", "S", "i", "x", "p", "s", "c", "z", "t"] and isinstance(m["t"], msgpack.Timestamp)


async def test_crypto_stream_trades_quotes_bars_and_orderbooks():
    async with running(rate=200, bar_interval_s=0.3) as emu:
        c = Collector(lambda g: all(len(g.get(k, [])) >= 3 for k in ("trade", "quote", "orderbook")) and g.get("bar"))
        stream = CryptoDataStream("PKCRYPTO", "sdk-secret", url_override=emu.ws_url("/v1beta3/crypto/us"))
        stream.subscribe_trades(c.handler("trade"), "BTC/USD")
        stream.subscribe_quotes(c.handler("quote"), "BTC/USD")
        stream.subscribe_bars(c.handler("bar"), "BTC/USD")
        stream.subscribe_orderbooks(c.handler("orderbook"), "BTC/USD")
        await run_until(stream, c)
    books = c.got["orderbook"]
    assert books[0].reset is True and len(books[0].bids) == 10 and not any(b.reset for b in books[1:])
    assert max(b.price for b in books[0].bids) < min(a.price for a in books[0].asks)
    for t in c.got["trade"]:
        assert t.symbol == "BTC/USD" and 0 < t.size < 1 and t.timestamp.tzinfo is not None
    for q in c.got["quote"]:
        assert q.bid_price < q.ask_price
    assert all(b.symbol == "BTC/USD" and b.volume > 0 for b in c.got["bar"])
