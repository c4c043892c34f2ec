"""Helpers shared by the Coinbase Exchange emulator tests: a real websockets client, signing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time

import websockets

from tickpipe.config import Secret
from tickpipe.emulators.base import EmulatorOptions
from tickpipe.emulators.coinbase_exchange import CoinbaseExchangeEmulator
from tickpipe.emulators.coinbase_exchange_protocol import CoinbaseExchangeEmulatorSettings, sign
from tickpipe.emulators.faults import FaultPlan

KEY = "emu-key-0123456789abcdef"
SECRET = base64.b64encode(bytes(range(64))).decode()
PASSPHRASE = "emu-passphrase"


def settings(**overrides) -> CoinbaseExchangeEmulatorSettings:
    return CoinbaseExchangeEmulatorSettings(**overrides)


def credentials(**overrides) -> CoinbaseExchangeEmulatorSettings:
    return settings(api_key=Secret(KEY), api_secret=Secret(SECRET), passphrase=Secret(PASSPHRASE), **overrides)


def emulator(rate: float = 200, faults: str | None = None, journal: str | None = None, creds=None,
             symbols: tuple[str, ...] = ("BTC-USD", "ETH-USD"), seed: int = 7, **opts) -> CoinbaseExchangeEmulator:
    return CoinbaseExchangeEmulator(EmulatorOptions(seed=seed, rate=rate, symbols=symbols, faults=FaultPlan.parse(faults),
                                                    journal=journal, credentials=creds, **opts))


def signed(msg: dict, key: str = KEY, secret: str = SECRET, passphrase: str = PASSPHRASE,
           timestamp: str | None = None) -> dict:
    ts = timestamp or str(time.time())
    return {**msg, "key": key, "passphrase": passphrase, "timestamp": ts, "signature": sign(secret, ts)}


class Client:
    """A plain websockets client that keeps raw frames as received."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.raw: list = []

    async def send(self, msg) -> None:
        await self.ws.send(msg if isinstance(msg, (str, bytes)) else json.dumps(msg))

    async def recv(self, timeout: float = 3.0):
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        self.raw.append(frame)
        try:
            return json.loads(frame)
        except ValueError:
            return frame

    async def until(self, predicate, timeout: float = 3.0) -> list:
        """Messages received up to and including the first one ``predicate`` accepts."""
        got, deadline = [], time.monotonic() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - time.monotonic()))
            got.append(msg)
            if isinstance(msg, dict) and predicate(msg):
                return got

    async def for_seconds(self, seconds: float) -> list:
        got, deadline = [], time.monotonic() + seconds
        with contextlib.suppress(asyncio.TimeoutError):
            while time.monotonic() < deadline:
                got.append(await self.recv(max(0.01, deadline - time.monotonic())))
        return got


@contextlib.asynccontextmanager
async def connect(emu, **kwargs):
    # max_queue=None: a test that stops reading must still see the server's close frame
    async with websockets.connect(emu.ws_url("/"), max_size=None, max_queue=None, close_timeout=2, **kwargs) as ws:
        yield Client(ws)


def of_type(msgs: list, *types: str) -> list[dict]:
    return [m for m in msgs if isinstance(m, dict) and m.get("type") in types]


SAME_KIND = {"ticker_initial": "ticker"}   # journal kind -> the frame type a client sees


def identity(msg) -> tuple:
    """What a client can tell about a frame: (kind, product, sequence, trade id), or GARBAGE."""
    if not isinstance(msg, dict):
        return ("GARBAGE",)
    return (msg["type"], msg.get("product_id"), msg.get("sequence"), msg.get("trade_id"))


def journal_stream(journal: list[dict], conn: int) -> list[tuple]:
    """The frames the journal says connection ``conn`` was sent, in order."""
    out = []
    for line in journal:
        if line["conn"] != conn:
            continue
        if line["event"] == "sent":
            ids = line["ids"]
            out.append((SAME_KIND.get(ids["kind"], ids["kind"]), ids.get("instrument"), ids.get("product_seq"),
                        ids.get("trade_id")))
        elif line["event"] == "fault" and line["fault"] == "malformed":
            out.append(("GARBAGE",))
    return out
