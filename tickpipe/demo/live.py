"""The demo's running state: scrapes, journals and the clean topics turned into view rows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tickpipe.demo.journals import JournalTail
from tickpipe.demo.observer import CleanTopics
from tickpipe.demo.scoring import SCORING, ScoringCounter, detected_anomalies, injected_anomalies
from tickpipe.demo.scrape import Samples
from tickpipe.demo.stats import Rate, percentile
from tickpipe.demo.view import ProviderRow

P = "tickpipe_producer_"


@dataclass
class ProviderState:
    provider: str
    journal: JournalTail
    frames: float = 0.0
    reconnects: float = 0.0
    resyncs: float = 0.0                # resubscribes the processor asked for after gaps (done)
    feed_ended: bool = False            # the emulator is gone: reconnect attempts from now on are ours
    connected: float | None = None
    ready: float | None = None
    frame_rate: Rate = field(default_factory=Rate)
    tick_rate: Rate = field(default_factory=Rate)
    _injected: Counter = field(default_factory=Counter)
    _injected_at: tuple[int, float] = (-1, 0.0)   # (journal lines, time) of the last count

    def injected(self, now: float) -> Counter:
        """Injected anomalies so far, recounted when the journal grew (a long one every 5 s)."""
        lines, (counted, at) = self.journal.lines, self._injected_at
        if self.rule and len(lines) != counted and (len(lines) < 20_000 or now - at >= 5.0):
            self._injected, self._injected_at = injected_anomalies(lines, self.rule), (len(lines), now)
        return self._injected

    @property
    def rule(self) -> ScoringCounter | None:
        return SCORING.get(self.provider)

    def take(self, samples: Samples | None) -> None:
        """The producer's latest scrape (None: it did not answer; keep the last numbers)."""
        if samples is None:
            self.connected = self.ready = None
            return
        self.frames = samples.total(P + "frames_received_total")
        self.resyncs = samples.total(P + "resyncs_total", outcome="done")
        if not self.feed_ended:
            self.reconnects = sum(v for r, v in samples.by_label(P + "reconnects_total", "reason").items()
                                  if r != "shutdown")
        self.connected = samples.total(P + "connected")
        self.ready = samples.total(P + "ready")

    @property
    def state(self) -> str:
        if self.ready:
            return "up"
        if self.connected:
            return "subscribing"
        return "connecting" if self.connected is not None else "no metrics"


def alerts_of(seen: CleanTopics, provider: str) -> list[dict]:
    return [a for a in seen.alerts if a.get("provider") == provider]


def row(state: ProviderState, seen: CleanTopics, now: float) -> ProviderRow:
    ticks = sum(n for (p, _k), n in seen.ticks.items() if p == state.provider)
    injected = state.injected(now)
    rule = state.rule
    detected = detected_anomalies(alerts_of(seen, state.provider), seen.dead_letters[state.provider], rule) \
        if rule else Counter({"DLQ": seen.dead_letters[state.provider]})
    recent = list(seen.recent_ms.get(state.provider, ()))
    return ProviderRow(state.provider, state.state, state.frame_rate.update(state.frames, now),
                       state.tick_rate.update(ticks, now), int(state.reconnects), dict(injected), dict(detected),
                       percentile(recent, 50), percentile(recent, 99), rule.kinds if rule else ("DLQ",))


class KindRates:
    """Clean ticks per second by record kind."""

    def __init__(self) -> None:
        self.rates: dict[str, Rate] = {}

    def update(self, seen: CleanTopics, now: float) -> dict[str, float]:
        totals = Counter()
        for (_p, kind), n in seen.ticks.items():
            totals[kind] += n
        return {k: self.rates.setdefault(k, Rate()).update(n, now) for k, n in totals.items()}
