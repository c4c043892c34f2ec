"""Process basics shared by every long-running command.

* :class:`OpsServer` serves ``/metrics`` (prometheus-client), ``/healthz`` (the event loop
  answers) and ``/readyz`` (every registered readiness check passes) on one small port.
* :func:`run_service` runs a coroutine ``main(stop)`` under SIGTERM/SIGINT handling: the
  first signal sets ``stop`` so the command can flush what it accepted; a second one, or
  ``grace_s`` elapsing, cancels it.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from tickpipe.config import setting
from tickpipe.logs import get_logger

log = get_logger("tickpipe.service")


@dataclass(frozen=True)
class OpsSettings:
    """Section ``ops``: the per-process HTTP server and logging."""

    host: str = setting("0.0.0.0", help="address of the /metrics, /healthz, /readyz server")
    port: int = setting(9400, minimum=-1, maximum=65535, help="its port (0 = any free port, -1 = off)")
    log_level: str = setting("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="log level")
    shutdown_grace_s: float = setting(20.0, minimum=0, help="time allowed to flush after SIGTERM")


ReadinessCheck = Callable[[], "bool | tuple[bool, str]"]


class OpsServer:
    """``/metrics``, ``/healthz``, ``/readyz`` for one process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, registry: CollectorRegistry = REGISTRY) -> None:
        self.host, self.port, self.registry = host, port, registry
        self._checks: dict[str, ReadinessCheck] = {}
        self._runner: web.AppRunner | None = None

    def add_readiness(self, name: str, check: ReadinessCheck) -> None:
        self._checks[name] = check

    def readiness(self) -> tuple[bool, dict[str, str]]:
        results: dict[str, str] = {}
        ok = True
        for name, check in self._checks.items():
            try:
                outcome = check()
            except Exception as exc:  # a failing check means "not ready", never a crash
                outcome = (False, f"check raised {type(exc).__name__}")
            passed, why = outcome if isinstance(outcome, tuple) else (bool(outcome), "")
            results[name] = "ok" if passed else (why or "not ready")
            ok = ok and passed
        return ok, results

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked
        log.info("ops server listening", url=f"http://{self.host}:{self.port}")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        ok, results = self.readiness()
        return web.json_response({"ready": ok, "checks": results}, status=200 if ok else 503)


def run_service(main: Callable[[asyncio.Event], Awaitable[int | None]], *, grace_s: float = 20.0) -> int:
    """Run ``main(stop)`` until it returns; SIGTERM/SIGINT set ``stop`` (a second one cancels)."""

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals_seen = 0

        def on_signal(signum: int) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                log.info("shutdown requested", signal=signal.Signals(signum).name)
                stop.set()
                loop.call_later(grace_s, _cancel, "grace period elapsed")
            else:
                _cancel("second signal")

        def _cancel(why: str) -> None:
            log.warning("forcing shutdown", reason=why)
            main_task.cancel()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        main_task = asyncio.ensure_future(main(stop))
        try:
            result = await main_task
            return int(result or 0)
        except asyncio.CancelledError:
            return 1  # forced: whatever was not flushed is lost, so say so
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    return asyncio.run(runner())
