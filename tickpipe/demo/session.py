"""One demo run, start to summary.

Start: topics, the emulators and the processor (until it has its partitions), then the
producers; observe every second until ``--duration`` or a signal. Stop in the order that
keeps the final numbers honest:

1. freeze the feeds (SIGSTOP): every journal line written so far was sent, and is received;
2. drain: the processor's lag reaches 0 and its reorder windows expire (so each hole is a GAP);
3. stop the emulators (SIGCONT + SIGTERM): the feeds end with a close the producers see at
   once; frames sent after the freeze are received after this moment, so the scoring
   compares the journals up to the freeze with what was detected in frames received before it;
4. stop the producers (they flush), drain again, stop the processor; the broker last.

Every child is reaped on every path, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from tickpipe.demo.children import PROCESSOR_ENV, Cast
from tickpipe.demo.live import KindRates, ProviderState, row
from tickpipe.demo.scrape import scrape
from tickpipe.demo.view import Screen, Snapshot
from tickpipe.kafka import KafkaSettings
from tickpipe.logs import get_logger

log = get_logger("tickpipe.demo")
SETTLE_S = int(PROCESSOR_ENV["TICKPIPE_INTEGRITY_REORDER_WINDOW_MS"]) / 1000 + 1.5  # windows expire, a tick runs


@dataclass
class DemoOptions:
    providers: list[str]
    skipped: dict[str, str]
    run_dir: Path
    duration: float | None
    rate: float
    seed: int
    group: str                          # the processor's consumer group
    screen: Screen
    faults: dict[str, str] | None = None
    exit_codes: dict[str, int | None] = field(default_factory=dict)


class DemoSession:
    def __init__(self, options: DemoOptions, kafka, topic_settings, stop: asyncio.Event) -> None:
        self.o, self.base_kafka, self.topic_settings, self.stop = options, kafka, topic_settings, stop
        self.kafka = kafka
        self.cast: Cast | None = None
        self.observer = None
        self.states: list[ProviderState] = []
        self.kind_rates = KindRates()
        self.began = self.started = time.monotonic()
        self.stopping_at: float | None = None
        self.steps: dict[str, float] = {}
        self.phase = "starting"
        self.lag: int | None = None
        self.cutoff_ns: int | None = None
        self.thaw_ns: int | None = None

    async def run(self, broker) -> dict | None:
        import aiohttp

        from tickpipe.admin import declare_topics
        from tickpipe.demo.journals import JournalTail
        from tickpipe.demo.lag import GroupLag
        from tickpipe.demo.observer import Observer
        from tickpipe.topics import raw_topic

        base = self.base_kafka     # the embedded broker speaks plaintext: only the names carry over
        self.kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix=base.topic_prefix,
                                   client_id=base.client_id)
        await declare_topics(self.kafka, self.topic_settings)
        self.cast = Cast(self.o.run_dir, broker.bootstrap_servers, self.o.rate, self.o.seed)
        try:
            await self._start_children()
            if self.stop.is_set():
                return None
            self.states = [ProviderState(p, JournalTail(self.cast.journal(p))) for p in self.o.providers]
            self.observer = Observer(self.kafka, self.o.providers)
            raw_topics = [raw_topic(p, self.kafka.topic_prefix) for p in self.o.providers]
            await self.observer.start()
            stop_consuming = asyncio.Event()
            consume = asyncio.create_task(self.observer.run(stop_consuming))
            try:
                async with aiohttp.ClientSession() as http:
                    self.http = http
                    self.group_lag = await GroupLag(self.kafka, self.o.group, raw_topics).start()
                    try:
                        code = await self._observe(broker)
                        await self._wind_down()
                    finally:
                        await self.group_lag.stop()
            finally:
                stop_consuming.set()
                await consume
                await self.observer.stop()
            return self._summary(code)
        finally:
            await self.cast.stop_all()

    async def _start_children(self) -> None:
        self.phase = "starting"

        # the processor first: producers started before it has its partitions would queue
        # frames for it, and the first seconds' latency would measure the group join
        await asyncio.gather(self.cast.start_emulators(self.o.providers, self.o.faults),
                             self.cast.start_processor(self.o.providers))
        await self.cast.start_producers()
        self.started = time.monotonic()
        self.phase = "running"

    async def _observe(self, broker) -> str:
        while True:
            await self._refresh()
            if self.stop.is_set():
                return "interrupted"
            if self.o.duration is not None and time.monotonic() - self.started >= self.o.duration:
                return "duration"
            dead = self.cast.dead()
            if dead or not broker.running():
                log.error("a process of the demo exited by itself", processes=dead or ["broker"])
                return "child exited"
            try:
                await asyncio.wait_for(self.stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    async def _refresh(self) -> None:
        ports = self.cast.ops_ports()
        scrapes = await asyncio.gather(*(scrape(self.http, ports[f"produce-{s.provider}"])
                                         if f"produce-{s.provider}" in ports else _none() for s in self.states))
        for state, samples in zip(self.states, scrapes):
            state.take(samples)
            state.journal.read()
        self.lag = await self.group_lag.lag()
        self.o.screen.show(self._snapshot())

    def _snapshot(self) -> Snapshot:
        now = time.monotonic()
        seen = self.observer.seen
        return Snapshot(now - self.started, self.phase, self.kafka.bootstrap_servers,
                        [row(s, seen, now) for s in self.states], self.kind_rates.update(seen, now), self.lag,
                        sum(seen.dead_letters.values()), len(seen.alerts), self.o.skipped)

    async def _wind_down(self) -> None:
        self.stopping_at = self._last_mark = time.monotonic()
        self.phase = "stopping: feeds frozen, draining"
        self.cast.freeze_feeds()
        await asyncio.sleep(0.05)
        self.cutoff_ns = time.time_ns()          # every journal line up to here was sent before the freeze
        self.observer.latency_before_ns = self.cutoff_ns
        await self._drain(settle=SETTLE_S, limit=20.0)
        self._mark("drain")
        self.phase = "stopping: feeds"
        await self._refresh()
        for state in self.states:
            state.feed_ended = True              # reconnects from here on are the end of the feed
        self.thaw_ns = time.time_ns()            # frames received from here on were sent after the freeze
        self.o.exit_codes.update({f"emulate-{p}": c for p, c in (await self.cast.stop_emulators()).items()})
        await self._refresh()                    # the producers' final counters (the feeds have ended)
        self._mark("emulators")
        self.phase = "stopping: producers"
        self.o.exit_codes.update({f"produce-{p}": c for p, c in (await self.cast.stop_producers()).items()})
        self._mark("producers")
        self.phase = "stopping: processor draining"
        await self._drain(settle=1.5, limit=15.0)
        await self.observer.drained(timeout=5.0)
        self._mark("final_drain")
        self.o.exit_codes.update(await self.cast.stop_processor())
        self._mark("processor")
        for state in self.states:
            state.journal.read()                 # the rest, flushed at exit

    def _mark(self, step: str) -> None:
        """Note how long a shutdown step took (``timing_s.stop_steps`` of the summary)."""
        now = time.monotonic()
        self.steps[step], self._last_mark = round(now - self._last_mark, 1), now

    async def _drain(self, settle: float, limit: float) -> None:
        """Wait at least ``settle`` seconds and until the processor's lag is 0 (at most ``limit``)."""
        began = time.monotonic()
        while time.monotonic() - began < limit:
            await self._refresh()                # the view goes on, and the lag is fresh
            if self.lag == 0 and time.monotonic() - began >= settle:
                return
            await asyncio.sleep(0.5)
        log.warning("processor did not drain in time", lag=self.lag, limit_s=limit)

    def _summary(self, ended_by: str) -> dict:
        from tickpipe.demo import summary

        now, now_ns = time.monotonic(), time.time_ns()
        stopping_at = self.stopping_at or now
        window = {"journal_cutoff_ns": self.cutoff_ns or now_ns, "detected_before_ns": self.thaw_ns or now_ns}
        result = summary.build(self.states, self.observer.seen, window["journal_cutoff_ns"],
                               window["detected_before_ns"], seconds=stopping_at - self.started,
                               bootstrap=self.kafka.bootstrap_servers, run_dir=str(self.o.run_dir),
                               skipped=self.o.skipped, exit_codes=self.o.exit_codes)
        result.update(ended_by=ended_by, scoring_window=window, timing_s={
            "starting": round(self.started - self.began, 1), "streaming": round(stopping_at - self.started, 1),
            "stopping": round(now - stopping_at, 1), "stop_steps": self.steps})
        with open(self.o.run_dir / "alerts.jsonl", "w") as fh:   # every alert seen, for a closer look
            fh.writelines(json.dumps(a) + "\n" for a in self.observer.seen.alerts)
        (self.o.run_dir / "summary.json").write_text(json.dumps(result, indent=2))   # with the journals it scores
        return result


async def _none():
    return None
