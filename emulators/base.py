"""What every feed emulator shares: options, the HTTP/WebSocket server lifecycle, pacing.

A provider's emulator subclasses :class:`Emulator`, adds its routes in ``routes()`` and
writes its protocol; the base binds one aiohttp server (REST and WebSocket on one port),
keeps the journal, numbers connections and stops everything cleanly::

    async with AlpacaEmulator(EmulatorOptions(seed=7, rate=200)) as emu:
        url = emu.ws_url("/v2/iex")
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, ClassVar

from aiohttp import web

from tickpipe.emulators.faults import FaultPlan, Outbox
from tickpipe.emulators.journal import Journal
from tickpipe.logs import get_logger


@dataclass(frozen=True)
class EmulatorOptions:
    host: str = "127.0.0.1"
    port: int = 0                      # 0: any free port
    seed: int = 1
    rate: float = 10.0                 # data messages per second per connection (0: as fast as possible)
    symbols: tuple[str, ...] = ()      # () : the provider's default instruments
    faults: FaultPlan = field(default_factory=FaultPlan)
    journal: str | None = None         # JSON-lines path, or None
    credentials: Any = None            # provider settings dataclass; None: accept any well-formed credentials
    max_frame_bytes: int = 1 << 20     # larger client frames get the provider's error reply


class Emulator:
    """Base class: one aiohttp application per emulator instance."""

    provider: ClassVar[str] = ""
    default_symbols: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        self.options = options or EmulatorOptions()
        self.symbols = tuple(self.options.symbols) or self.default_symbols
        self.journal = Journal(self.options.journal)
        self.log = get_logger(f"tickpipe.emulator.{self.provider}")
        self.port = self.options.port
        self._runner: web.AppRunner | None = None
        self._connections = 0
        self._tasks: set[asyncio.Task] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self.stopping = asyncio.Event()
        self.frozen = False

    # ----- to be provided by each provider -----
    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # ----- lifecycle -----
    async def start(self) -> "Emulator":
        app = web.Application(client_max_size=self.options.max_frame_bytes, middlewares=[self._hold_while_frozen])
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.log.info("emulator listening", url=self.http_url(""))
        return self

    async def stop(self) -> None:
        self.stopping.set()
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutting down")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.journal.close()

    def freeze(self) -> None:
        """Act as a SIGSTOPped emulator would: every outbox withholds (and does not journal)
        what it is given from now on, so the journal ends where the frames on the wire do;
        periodic faults stop firing; a new request (a reconnect) gets no answer until
        :meth:`stop`. Frames already handed to a socket still arrive."""
        self.frozen = True

    @web.middleware
    async def _hold_while_frozen(self, request: web.Request, handler) -> web.StreamResponse:
        while self.frozen and not self.stopping.is_set():
            await asyncio.sleep(0.05)
        if self.frozen:
            return web.Response(status=503, text="server stopping\n")
        return await handler(request)

    async def __aenter__(self) -> "Emulator":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # ----- helpers for subclasses -----
    def http_url(self, path: str) -> str:
        return f"http://{self.options.host}:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        return f"ws://{self.options.host}:{self.port}{path}"

    def new_connection(self, **fields: Any) -> int:
        """Number a new client connection (from 1) and journal it."""
        self._connections += 1
        self.journal.write("connect", self._connections, **fields)
        return self._connections

    def track_socket(self, ws: web.WebSocketResponse) -> None:
        self._sockets.add(ws)

    def untrack_socket(self, ws: web.WebSocketResponse) -> None:
        self._sockets.discard(ws)

    def spawn(self, coro) -> asyncio.Task:
        """Run a background task that :meth:`stop` cancels."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def outbox(self, conn: int) -> Outbox:
        plan = self.options.faults
        return Outbox(plan, plan.rng(self.options.seed, conn), self.journal, conn, frozen=lambda: self.frozen)

    def periodic(self, every: float, rng) -> "PeriodicFault":
        """A periodic fault (disconnect, stall) of this emulator's plan; it never fires while frozen."""
        return PeriodicFault(self.options.faults, every, rng, frozen=lambda: self.frozen)

    async def slow(self) -> None:
        """The ``slow`` fault: delay a control reply."""
        if self.options.faults.slow:
            await asyncio.sleep(self.options.faults.slow)


async def paced(rate: float, tick_s: float = 0.01) -> AsyncIterator[int]:
    """Yield how many messages are due now, forever, averaging ``rate`` per second.

    ``rate <= 0`` yields large batches with only a zero-sleep between them (as fast as the
    server can send). Lateness is not accumulated without bound: a stalled consumer does not
    get a burst of more than one second's worth afterwards.
    """
    if rate <= 0:
        while True:
            yield 256
            await asyncio.sleep(0)
    period = max(tick_s, 1.0 / rate) if rate < 1 / tick_s else tick_s
    start = time.monotonic()
    sent = 0.0
    while True:
        now = time.monotonic()
        due = (now - start) * rate - sent
        if due > rate:  # more than a second behind: forget the backlog
            sent += due - rate
            due = rate
        n = int(due)
        if n > 0:
            sent += n
            yield n
        await asyncio.sleep(period)


class PeriodicFault:
    """Fires about every ``every`` seconds (seeded jitter), e.g. for disconnects and stalls."""

    def __init__(self, plan: FaultPlan, every: float, rng, frozen: Callable[[], bool] = lambda: False) -> None:
        self.plan, self.every, self.rng, self.frozen = plan, every, rng, frozen
        interval = plan.next_interval(rng, every)
        self.due = time.monotonic() + interval if interval is not None else None

    def fired(self) -> bool:
        if self.due is None or time.monotonic() < self.due or self.frozen():
            return False
        self.due = time.monotonic() + self.plan.next_interval(self.rng, self.every)
        return True
