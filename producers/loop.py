"""The one shared connection loop every producer runs (the adapter contract is in :mod:`.base`).

connect -> ``session_start`` marker -> authenticate -> subscribe -> read frames (each recorded
verbatim with the session id and the next ``tp-seq``) until the session breaks -> ``session_end``
marker with the reason -> back off (full jitter; slow pace after a permanent auth failure) ->
reconnect and resubscribe everything. ``stop`` ends it: unsubscribe, close, final marker.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from tickpipe.config import redact
from tickpipe.envelope import KIND_SESSION_END, KIND_SESSION_START
from tickpipe.logs import get_logger
from tickpipe.producers import metrics
from tickpipe.producers.backoff import auth_retry_delay, full_jitter
from tickpipe.producers.base import AuthError, FeedAdapter, ResyncTarget, Transport, TransportClosed
from tickpipe.producers.recorder import Recorder, RecordSink
from tickpipe.producers.session import FeedStale, LiveSession
from tickpipe.producers.settings import ProducerSettings

log = get_logger("tickpipe.producer")


class _Stopped(Exception):
    """Shutdown was requested while a phase was running."""


@dataclass
class SessionEnd:
    reason: str
    close_code: int | None = None
    close_reason: str = ""
    error: str = ""
    subscribed: bool = False
    duration_s: float = 0.0


class ConnectionLoop:
    def __init__(self, adapter: FeedAdapter, recorder: Recorder, sink: RecordSink,
                 settings: ProducerSettings | None = None, rng: random.Random | None = None) -> None:
        self.adapter, self.recorder, self.sink = adapter, recorder, sink
        self.settings = settings or adapter.loop_settings
        self.rng = rng or random.Random()
        self.provider = adapter.provider
        self.connected = self.authenticated = self.subscribed = False
        self.session: LiveSession | None = None
        self.attempts = 0            # connection attempts, for tests and logs
        self.auth_failures = 0       # permanent auth failures in a row
        self._failures = 0           # transient failures in a row (backoff exponent)
        self._resyncs: asyncio.Queue[ResyncTarget] = asyncio.Queue(maxsize=1000)
        self._m_connected = metrics.connected.labels(self.provider)
        self._m_ready = metrics.ready.labels(self.provider)

    # ----- readiness and control -----
    def ready(self) -> tuple[bool, str]:
        for flag, why in ((self.connected, "not connected"), (self.authenticated, "not authenticated"),
                          (self.subscribed, "not subscribed")):
            if not flag:
                return False, why
        return True, ""

    def request_resync(self, target: ResyncTarget) -> bool:
        """Queue a resync for the current session; False when there is none (a reconnect resubscribes anyway)."""
        if not self.subscribed:
            metrics.resyncs.labels(self.provider, "not_ready").inc()
            return False
        try:
            self._resyncs.put_nowait(target)
        except asyncio.QueueFull:
            metrics.resyncs.labels(self.provider, "failed").inc()
            return False
        return True

    # ----- the loop -----
    async def run(self, stop: asyncio.Event) -> None:
        previous = ""
        while not stop.is_set():
            end = await self._one_attempt(stop, previous)
            previous = self.recorder.session
            metrics.reconnects.labels(self.provider, end.reason).inc()
            if stop.is_set() or end.reason == "shutdown":
                break
            delay = self._delay_after(end)
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    def _delay_after(self, end: SessionEnd) -> float:
        s = self.settings
        if end.reason == "auth_failed":
            return auth_retry_delay(self.auth_failures, s.auth_retry_min_s, s.auth_retry_max_s, self.rng)
        if end.reason == "token_refresh":
            self._failures = 0
            return 0.0
        if end.subscribed and end.duration_s >= s.stable_after_s:
            self._failures = 0
        delay = full_jitter(self._failures, s.backoff_initial_s, s.backoff_max_s, self.rng)
        self._failures += 1
        log.info("reconnecting", provider=self.provider, reason=end.reason, delay_s=round(delay, 3))
        return delay

    async def _one_attempt(self, stop: asyncio.Event, previous: str) -> SessionEnd:
        self.attempts += 1
        try:
            transport = await _until(stop, asyncio.wait_for(self.adapter.connect(), self.settings.connect_timeout_s))
        except _Stopped:
            return SessionEnd("shutdown")
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            end = self._classify(exc, connecting=True)
            if end.reason != "auth_failed":
                log.warning("connect failed", provider=self.provider, endpoint=self.adapter.endpoint(), error=end.error)
            return end
        return await self._run_session(transport, stop, previous)

    async def _run_session(self, transport: Transport, stop: asyncio.Event, previous: str) -> SessionEnd:
        session_id = self.recorder.new_session()
        session = self.session = LiveSession(self, transport, session_id, self.attempts)
        started = time.monotonic()
        self.recorder.marker(KIND_SESSION_START, endpoint=self.adapter.endpoint(), attempt=self.attempts,
                             previous_session=previous or None)
        self.connected = True
        self._m_connected.set(1)
        quiet = log.debug if self.auth_failures else log.info  # while refused, the one error line says it all
        quiet("connected", provider=self.provider, endpoint=self.adapter.endpoint(), session=session_id)
        end = SessionEnd("error")
        try:
            limit = self.settings.auth_timeout_s
            await _until(stop, asyncio.wait_for(self.adapter.authenticate(session), limit))
            self.authenticated = True
            await _until(stop, asyncio.wait_for(self.adapter.subscribe(session), limit))
            self._drain_resyncs()
            self._auth_succeeded()
            self.subscribed = True
            self._m_ready.set(1)
            log.info("subscribed", provider=self.provider, session=session_id)
            end = await self._serve(session, stop)
        except _Stopped:
            end = SessionEnd("shutdown")
        except asyncio.CancelledError:
            end = SessionEnd("shutdown")
            raise
        except BaseException as exc:
            end = self._classify(exc)
        finally:
            end.subscribed, end.duration_s = self.subscribed, time.monotonic() - started
            await self._close_session(session, end)
        return end

    async def _serve(self, session: LiveSession, stop: asyncio.Event) -> SessionEnd:
        session.reading_since = time.monotonic()
        tasks = {asyncio.ensure_future(self._read_forever(session)): "reader",
                 asyncio.ensure_future(self._watch_staleness(session)): "watchdog",
                 asyncio.ensure_future(self._resync_worker(session)): "resync",
                 asyncio.ensure_future(stop.wait()): "stop"}
        if self.adapter.keepalive_interval_s:
            tasks[asyncio.ensure_future(self._keepalive(session))] = "keepalive"
        deadline = self.adapter.session_deadline()
        if deadline is not None:
            tasks[asyncio.ensure_future(asyncio.sleep(max(0.0, deadline - time.time())))] = "deadline"
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finished = min(done, key=lambda t: tasks[t] != "stop")  # a shutdown wins over whatever ended with it
        which = tasks[finished]
        if which == "stop":
            return SessionEnd("shutdown")
        if which == "deadline":
            log.info("credentials expire soon: reconnecting with fresh ones", provider=self.provider)
            return SessionEnd("token_refresh")
        exc = finished.exception()
        return self._classify(exc) if exc else SessionEnd("error", error=f"{which} ended")

    async def _read_forever(self, session: LiveSession) -> None:
        on_frame, next_frame = self.adapter.on_frame, session.next_frame
        while True:
            frame = await next_frame()
            await on_frame(session, frame)

    async def _watch_staleness(self, session: LiveSession) -> None:
        """Raise :class:`FeedStale` once no frame has arrived for ``stale_after_s`` of reading (time
        paused for back-pressure does not count). One timer per ``stale_after_s``, not one per frame."""
        limit = self.settings.stale_after_s
        while True:
            since = max(self.recorder.last_frame_monotonic, session.reading_since)
            idle = time.monotonic() - since
            if idle >= limit:
                if not getattr(self.sink, "paused", False):
                    raise FeedStale(f"no frame for {limit:g}s")
                idle = 0.0  # reads are paused: look again later (resuming restarts the count)
            await asyncio.sleep(limit - idle)

    async def _keepalive(self, session: LiveSession) -> None:
        while True:
            await asyncio.sleep(self.adapter.keepalive_interval_s)
            await self.adapter.keepalive(session)

    async def _resync_worker(self, session: LiveSession) -> None:
        while True:
            target = await self._resyncs.get()
            try:
                known = await asyncio.wait_for(self.adapter.resync(session, target), self.settings.auth_timeout_s)
            except TransportClosed:
                raise
            except Exception as exc:
                metrics.resyncs.labels(self.provider, "failed").inc()
                log.warning("resync failed", provider=self.provider, target=target.describe(),
                            error=redact(f"{type(exc).__name__}: {exc}"))
                continue
            outcome = "done" if known else "unknown"
            metrics.resyncs.labels(self.provider, outcome).inc()
            log.info("resync " + outcome, provider=self.provider, target=target.describe(), reason=target.reason)

    def _drain_resyncs(self) -> None:
        while not self._resyncs.empty():  # a full subscribe supersedes queued resyncs
            self._resyncs.get_nowait()

    async def _close_session(self, session: LiveSession, end: SessionEnd) -> None:
        if end.reason == "shutdown" and self.subscribed:
            try:
                await asyncio.wait_for(self.adapter.unsubscribe(session), self.settings.unsubscribe_timeout_s)
            except Exception as exc:
                log.warning("unsubscribe on shutdown failed", provider=self.provider, error=redact(str(exc)))
        try:
            await asyncio.wait_for(session.transport.close(), 5)
        except Exception as exc:
            log.debug("close failed", provider=self.provider, error=redact(str(exc)))
        self.connected = self.authenticated = self.subscribed = False
        self._m_connected.set(0)
        self._m_ready.set(0)
        self.session = None
        fields = {"reason": end.reason, "frames": session.frames, "duration_s": round(end.duration_s, 3)}
        if end.close_code is not None:
            fields.update(close_code=end.close_code, close_reason=end.close_reason)
        if end.error:
            fields["error"] = end.error
        self.recorder.marker(KIND_SESSION_END, **fields)
        self.recorder.count_received()
        quiet = log.debug if end.reason == "auth_failed" and self.auth_failures > 1 else log.info
        quiet("session ended", provider=self.provider, session=session.session_id, **fields)

    def _classify(self, exc: BaseException, connecting: bool = False) -> SessionEnd:
        text = redact(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, AuthError):
            if exc.permanent:
                self._auth_failed(redact(str(exc)))
                return SessionEnd("auth_failed", error=text)
            return SessionEnd("error", error=text)
        if isinstance(exc, TransportClosed):
            return SessionEnd("closed", exc.code, exc.reason, error=text)
        if isinstance(exc, FeedStale):
            return SessionEnd("stale", error=text)
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            return SessionEnd("timeout", error=f"{'connect' if connecting else 'authenticate/subscribe'} timed out")
        return SessionEnd("connect_failed" if connecting else "error", error=text)

    def _auth_failed(self, message: str) -> None:
        self.auth_failures += 1
        metrics.auth_failures.labels(self.provider).inc()
        metrics.auth_failing.labels(self.provider).set(1)
        if self.auth_failures == 1:
            log.error("authentication refused: check the credentials; retrying slowly", provider=self.provider,
                      endpoint=self.adapter.endpoint(), error=message,
                      retry_min_s=self.settings.auth_retry_min_s, retry_max_s=self.settings.auth_retry_max_s)
        else:
            log.debug("authentication refused again", provider=self.provider, failures=self.auth_failures)

    def _auth_succeeded(self) -> None:
        if self.auth_failures:
            log.info("authentication accepted again", provider=self.provider, after_failures=self.auth_failures)
        self.auth_failures = 0
        metrics.auth_failing.labels(self.provider).set(0)


async def _until(stop: asyncio.Event, awaitable):
    """Await ``awaitable`` unless ``stop`` is set first (then cancel it and raise :class:`_Stopped`)."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        result = await task
    except (asyncio.CancelledError, Exception):
        raise _Stopped() from None
    # connect() finished in the same instant: close what it opened
    if hasattr(result, "close"):
        await result.close()
    raise _Stopped()
