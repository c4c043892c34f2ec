"""Soak: 10 minutes at about 2,000 frames/s through the whole pipeline (three feeds with message
faults, their producers, one processor). Memory stays flat and the reorder windows stay within
their bound. Marked ``slow``: ``make test`` skips it; run it with
``.venv/bin/python -m pytest tests/reliability/test_soak.py -m slow``
(``TICKPIPE_SOAK_S`` shortens or lengthens it)."""

from __future__ import annotations

import os
import re
import time

import pytest

from tests.reliability.support import Rig, http_get

SOAK_S = float(os.environ.get("TICKPIPE_SOAK_S", "600"))
WARM_UP_S = min(120.0, SOAK_S / 5)
RATES = {"coinbase": 700, "alpaca": 700, "financefeast": 600}    # messages/s, about 2,000 frames/s in all
FAULTS = "drop=0.001,reorder=0.001,duplicate=0.001,malformed=0.001"
WINDOW_ITEMS = 1000


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return int(re.search(r"VmRSS:\s+(\d+)", fh.read()).group(1)) / 1024


def gauge(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf'^{name}{{[^}}]*}} (\S+)$', text, re.M))


@pytest.mark.slow
@pytest.mark.timeout(SOAK_S + 300)
def test_ten_minutes_at_two_thousand_frames_per_second_memory_flat_buffers_bounded(kafka_settings, tmp_path, figures):
    rig = Rig(kafka_settings, tmp_path, env={"TICKPIPE_INTEGRITY_REORDER_WINDOW_ITEMS": str(WINDOW_ITEMS)})
    rig.declare_topics()
    samples: list[dict] = []
    try:
        worker = rig.worker("process", list(RATES))
        worker.start()
        for provider, rate in RATES.items():
            rig.start_feeds([provider], faults={provider: FAULTS}, rate=rate)
        started = time.monotonic()
        while time.monotonic() - started < SOAK_S:
            time.sleep(10)
            text = http_get(worker.ready["ops_port"], "/metrics")
            samples.append({"t": time.monotonic() - started,
                            "rss": {c.name: rss_mb(c.process.pid) for c in [worker, *rig.producers.values()]},
                            "held": gauge(text, "tickpipe_processor_reorder_buffer_records"),
                            "frames": gauge(text, "tickpipe_processor_frames_total")})
            assert rig.crashed() == []
    finally:
        rig.stop()
    warm = [s for s in samples if s["t"] >= WARM_UP_S]
    rate = (warm[-1]["frames"] - warm[0]["frames"]) / (warm[-1]["t"] - warm[0]["t"])
    assert rate >= 1500, f"only {rate:.0f} frames/s processed"
    for name in warm[0]["rss"]:
        first, last = warm[0]["rss"][name], warm[-1]["rss"][name]
        assert last <= first * 1.2 + 20, f"{name}: {first:.0f} MB after warm-up, {last:.0f} MB at the end"
    assert max(s["held"] for s in samples) <= WINDOW_ITEMS * 2 * len(RATES)
    figures["soak: frames/s processed"] = int(rate)
