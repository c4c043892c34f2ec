"""Detection is exact over 20 seeds mixing every fault kind.

For each seed one provider (in turn) runs its real emulator with drops, swaps, repeats,
malformed frames and (every third seed) a disconnect; the provider's real producer
adapter and connection loop record the frames exactly as a producer would (into memory, not
Kafka); the processor's pipeline with the integrity stage turns them into records, alerts and
dead letters; and the anomalies it reports equal, kind by kind, the faults the emulator's
journal says a consumer could see (``tickpipe.demo.scoring``). Every message the emulator sent
at the scoring counter reaches the clean output exactly once unless an alert covers it.
"""

from __future__ import annotations

import asyncio

import pytest

from tickpipe import producers
from tickpipe.config import load_section
from tickpipe.demo.emulated import emulator_env, producer_env
from tickpipe.demo.scoring import SCORING, compare, detected_anomalies, injected_anomalies
from tickpipe.emulators import load as load_emulator
from tickpipe.emulators.base import EmulatorOptions
from tickpipe.emulators.faults import FaultPlan
from tickpipe.emulators.journal import read_journal
from tickpipe.processors.integrity.check import IntegrityCheck
from tickpipe.processors.integrity.stage import IntegritySettings
from tickpipe.processors.pipeline import Pipeline
from tickpipe.processors.records import ALERT_KIND, DEAD_LETTER_KIND
from tickpipe.producers.loop import ConnectionLoop
from tickpipe.producers.recorder import Recorder
from tickpipe.producers.settings import loop_settings_for
from tickpipe.providers import section_name

SCORED = ("coinbase", "alpaca", "tdameritrade", "coinbase-exchange", "schwab", "financefeast")
RUN_S = 2.5
# Schwab's faultable messages (CHART_EQUITY bars) come once a (fast-clock) second: fault them more often.
FAULT_RATE = {"schwab": 0.3}


class MemorySink:
    """A producer sink that keeps the raw records instead of sending them to Kafka."""

    def __init__(self) -> None:
        self.records = []

    def put(self, record) -> None:
        self.records.append(record)

    async def wait_for_room(self) -> None:
        return None


async def recorded_everything(recorder: Recorder, quiet_s: float = 0.3, limit_s: float = 10.0) -> None:
    """Wait until the producer has recorded no new frame for ``quiet_s`` (the feed is frozen)."""
    loop = asyncio.get_running_loop()
    seen, quiet_since, deadline = recorder.seq, loop.time(), loop.time() + limit_s
    while loop.time() - quiet_since < quiet_s and loop.time() < deadline:
        await asyncio.sleep(0.05)
        if recorder.seq != seen:
            seen, quiet_since = recorder.seq, loop.time()


async def record_session(provider: str, seed: int, journal) -> list:
    p = FAULT_RATE.get(provider, 0.02)
    # Disconnects close with a close frame: an abrupt TCP drop loses frames the journal already counts
    # as sent, which no consumer can tell from a gap (the reliability suite covers abrupt drops).
    faults = f"drop={p},reorder={p},duplicate={p},malformed=0.01" + (",disconnect_every=1.2,close_code=4000"
                                                                       if seed % 3 == 0 else "")
    emulator_cls = load_emulator(provider)
    section = section_name(provider)
    credentials = load_section(emulator_cls.settings_class, f"emulator_{section}", env=emulator_env(provider))
    options = EmulatorOptions(seed=seed, rate=200, faults=FaultPlan.parse(faults), journal=str(journal),
                              credentials=credentials)
    sink = MemorySink()
    async with emulator_cls(options) as emulator:
        adapter_cls = producers.load(provider)
        env = {**producer_env(provider, emulator.port), "TICKPIPE_PRODUCER_BACKOFF_INITIAL_S": "0.05",
               "TICKPIPE_PRODUCER_BACKOFF_MAX_S": "0.2"}
        adapter = adapter_cls(load_section(adapter_cls.settings_class, section, env=env), loop_settings_for(adapter_cls, env=env))
        recorder = Recorder(provider, f"{provider}-score")
        recorder.attach(sink)
        loop = ConnectionLoop(adapter, recorder, sink, adapter.loop_settings)
        stop = asyncio.Event()
        task = asyncio.ensure_future(loop.run(stop))
        await asyncio.sleep(RUN_S * (2 if provider == "schwab" else 1))
        emulator.freeze()   # the journal ends where the frames on the wire do ...
        await recorded_everything(recorder)   # ... and the producer reads them all before it leaves
        emulator.stopping.set()
        stop.set()
        await asyncio.wait_for(task, 15)
    return sink.records


@pytest.mark.parametrize("seed", range(20))
async def test_detected_anomalies_equal_the_injected_ones(seed, tmp_path):
    provider = SCORED[seed % len(SCORED)]
    journal = tmp_path / "journal.jsonl"
    raws = await record_session(provider, seed, journal)
    pipeline = Pipeline.for_provider(provider, checks=[IntegrityCheck(provider, IntegritySettings(stale_after_s=0))])
    alerts, dead = [], 0
    for raw in raws:
        for out in pipeline.handle_raw(raw).outputs:
            alerts += [out.record] if out.kind == ALERT_KIND else []
            dead += out.kind == DEAD_LETTER_KIND
    alerts += [out.record for out in pipeline.finish().outputs if out.kind == ALERT_KIND]
    rule = SCORING[provider]
    lines = read_journal(str(journal))
    injected, detected = injected_anomalies(lines, rule), detected_anomalies(alerts, dead, rule)
    score = compare(injected, detected, rule.kinds)
    assert sum(injected.values()) > 0, "the seed injected nothing a consumer could see"
    assert score["all_equal"], (provider, {k: v for k, v in score["by_kind"].items() if v["equal"] is False})
