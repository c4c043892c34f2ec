"""Fidelity: widely used Coinbase Pro/Exchange client libraries, unmodified, against the emulator.

* ``copra`` (asyncio, autobahn): signed subscribe, full + heartbeat.
* ``cbpro`` (coinbasepro-python; websocket-client in a thread): signed subscribe, and its
  level-3 ``OrderBook`` that resyncs from ``GET /products/<id>/book?level=3`` on every gap.
* ``coinbasepro`` (REST only): book, paginated trades (``CB-AFTER``), time.

All are test dependencies only (``pip install --no-deps copra cbpro coinbasepro`` plus
autobahn, websocket-client, requests, sortedcontainers, pymongo: their pinned versions do not
build on Python 3.11). Each is pointed at the emulator by URL only.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest

from tests.emulators.coinbase_exchange_support import KEY, PASSPHRASE, SECRET, connect, credentials, emulator
from tickpipe.emulators.journal import read_journal

copra_ws = pytest.importorskip("copra.websocket")
cbpro = pytest.importorskip("cbpro")


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


class CopraRecorder(copra_ws.Client):
    """copra's documented way to consume: override on_message / on_error."""

    def __init__(self, *args, **kwargs) -> None:
        self.got: list[dict] = []
        self.errors: list[tuple[str, str]] = []
        super().__init__(*args, **kwargs)

    def on_message(self, message):
        self.got.append(message)

    def on_error(self, message, reason=""):
        self.errors.append((message, reason))


async def test_copra_signed_subscribe_receives_full_channel():
    async with emulator(rate=200, creds=credentials()) as emu:
        client = CopraRecorder(asyncio.get_running_loop(),
                               [copra_ws.Channel("full", "BTC-USD"), copra_ws.Channel("heartbeat", "BTC-USD")],
                               feed_url=emu.ws_url("/"), auth=True, key=KEY, secret=SECRET, passphrase=PASSPHRASE,
                               auto_reconnect=False)
        try:
            await wait_for(lambda: any(m["type"] == "heartbeat" for m in client.got)
                           and sum(m["type"] == "open" for m in client.got) >= 3)
        finally:
            await client.close()
    assert client.errors == []
    assert {c["name"] for c in client.got[0]["channels"]} == {"full", "heartbeat"}
    seqs = [m["sequence"] for m in client.got if m["type"] in ("received", "open", "done", "match", "change")]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_copra_with_wrong_secret_gets_the_auth_error():
    async with emulator(creds=credentials()) as emu:
        client = CopraRecorder(asyncio.get_running_loop(), [copra_ws.Channel("full", "BTC-USD")],
                               feed_url=emu.ws_url("/"), auth=True, key=KEY, secret="d3Jvbmc=", passphrase=PASSPHRASE,
                               auto_reconnect=False)
        try:
            await wait_for(lambda: client.errors)
        finally:
            await client.close()
    assert client.errors == [("Sorry, you could not be authenticated: Bad Request", "invalid signature")]


class CbproRecorder(cbpro.WebsocketClient):
    def on_open(self):
        self.got = []

    def on_message(self, msg):
        self.got.append(msg)


async def test_cbpro_websocket_client_signed_subscribe():
    async with emulator(rate=200, creds=credentials()) as emu:
        client = CbproRecorder(url=emu.ws_url("/"), products=["ETH-USD"], channels=["full", "matches"], auth=True,
                               api_key=KEY, api_secret=SECRET, api_passphrase=PASSPHRASE, should_print=False)
        client.start()
        try:
            await wait_for(lambda: sum(m["type"] == "match" for m in client.got) >= 2)
        finally:
            await asyncio.to_thread(client.close)
    assert client.error is None
    assert client.got[0]["type"] == "subscriptions"
    assert client.got[1]["type"] == "last_match"


class GapCountingBook(cbpro.OrderBook):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gaps: list[tuple[int, int]] = []

    def on_sequence_gap(self, gap_start, gap_end):
        self.gaps.append((gap_start, gap_end))
        super().on_sequence_gap(gap_start, gap_end)


@pytest.mark.parametrize("faults", [None, "drop=0.03"])
async def test_cbpro_order_book_builds_and_resyncs_from_rest(faults):
    async with emulator(rate=300, faults=faults, creds=credentials(), symbols=("BTC-USD",)) as emu:
        book = GapCountingBook(product_id="BTC-USD")
        book.url, book.channels = emu.ws_url("/"), ["full"]
        book.auth, book.api_key, book.api_secret, book.api_passphrase = True, KEY, SECRET, PASSPHRASE
        book._client = cbpro.PublicClient(api_url=emu.http_url(""))      # its REST base URL
        book.start()
        try:
            first = None

            def progressed():
                nonlocal first
                first = first or (book._sequence if book._sequence > 0 else None)
                return first is not None and book._sequence > first + 200 and (faults is None or book.gaps)

            await wait_for(progressed, timeout=8)
        finally:
            await asyncio.to_thread(book.close)
        current = book.get_current_book()
    assert book.error is None                      # its FIFO asserts on every match held
    assert bool(book.gaps) == (faults is not None)
    bids = [Decimal(p) for p, _s, _o in current["bids"]]
    asks = [Decimal(p) for p, _s, _o in current["asks"]]
    assert bids and asks and max(bids) < min(asks)


async def test_copra_reconnects_and_resubscribes_after_an_injected_disconnect(tmp_path):
    path = str(tmp_path / "journal.jsonl")
    async with emulator(rate=100, faults="disconnect_every=0.4,close_code=1011", journal=path) as emu:
        client = CopraRecorder(asyncio.get_running_loop(), [copra_ws.Channel("matches", "ETH-USD")],
                               feed_url=emu.ws_url("/"), auto_reconnect=True)
        try:
            await wait_for(lambda: sum(m["type"] == "subscriptions" for m in client.got) >= 2, timeout=6)
        finally:
            await client.close()
    acks = [m for m in client.got if m["type"] == "subscriptions"]
    assert all(a["channels"][0]["product_ids"] == ["ETH-USD"] for a in acks)
    assert sum(m["type"] == "last_match" for m in client.got) >= 2              # a fresh last_match per connection
    assert [e["code"] for e in read_journal(path) if e["event"] == "disconnect"][0] == 1011


async def test_coinbasepro_rest_client_reads_book_trades_and_time():
    import itertools

    coinbasepro = pytest.importorskip("coinbasepro")
    async with emulator(rate=400, symbols=("ETH-USD",)) as emu, connect(emu) as c:
        await c.send({"type": "subscribe", "product_ids": ["ETH-USD"], "channels": ["matches"]})
        await wait_for(lambda: len(emu.engine.products["ETH-USD"].trades) >= 150, timeout=8)
        client = coinbasepro.PublicClient(api_url=emu.http_url(""))
        book = await asyncio.to_thread(client.get_product_order_book, "ETH-USD", 3)
        newest = emu.engine.products["ETH-USD"].trades[-1]["trade_id"]
        trades = await asyncio.to_thread(lambda: list(itertools.islice(client.get_product_trades("ETH-USD", newest), 150)))
        server_time = await asyncio.to_thread(client.get_time)
    assert isinstance(book["sequence"], int) and len(book["bids"][0]) == 3
    assert [t["trade_id"] for t in trades] == list(range(newest, newest - 150, -1))    # two pages via CB-AFTER
    assert all(isinstance(t["price"], Decimal) and t["side"] in ("buy", "sell") for t in trades)
    assert server_time["iso"].year >= 2024
