"""The final summary: the scoring window, unscored kinds, providers without data."""

from __future__ import annotations

import json

from tickpipe.demo import summary
from tickpipe.demo.journals import JournalTail
from tickpipe.demo.live import ProviderState
from tickpipe.demo.observer import CleanTopics

FREEZE, THAW = 1_000, 2_000


def journal(tmp_path, provider: str, lines: list[dict]) -> JournalTail:
    path = tmp_path / f"{provider}.journal"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    tail = JournalTail(path)
    tail.read()
    return tail


def sent(ts: int, n: int) -> dict:
    return {"ts_ns": ts, "event": "sent", "conn": 1, "ids": {"instrument": "AAPL", "trade_id": n}}


def drop(ts: int, n: int) -> dict:
    return {"ts_ns": ts, "event": "fault", "conn": 1, "fault": "drop", "ids": [{"instrument": "AAPL", "trade_id": n}]}


def gap(detected: int, provider: str = "alpaca") -> dict:
    return {"kind": "GAP", "provider": provider, "scope": "instrument", "counter": "trade_id", "missing_count": 1,
            "detected_time": detected}


def test_faults_after_the_freeze_and_detections_after_the_thaw_are_left_out(tmp_path):
    alpaca = ProviderState("alpaca", journal(tmp_path, "alpaca", [
        sent(100, 1), drop(200, 2), sent(300, 3),          # before the freeze: scored
        drop(1_500, 4), sent(2_500, 5)]))                  # after the freeze: not
    alpaca.frames = 3
    seen = CleanTopics()
    seen.ticks[("alpaca", "trade")] = 3
    seen.alerts += [gap(310), gap(2_600)]                  # the second: a frame sent after the freeze
    seen.dead_letter_times["alpaca"] = [150, 2_700]
    seen.dead_letters["alpaca"] = 2
    seen.latency("alpaca").add(12.5)
    result = summary.build([alpaca], seen, FREEZE, THAW, seconds=10, bootstrap="b", run_dir="r", skipped={},
                           exit_codes={})
    rows = result["providers"]["alpaca"]["anomalies"]["by_kind"]
    assert rows["GAP"] == {"injected": 1, "detected": 1, "scored": True, "equal": True}
    assert rows["DLQ"]["detected"] == 1 and rows["DLQ"]["equal"] is False      # one dead letter, no garbage journaled
    assert result["providers"]["alpaca"]["dlq"] == 2                            # the table still shows every one
    assert result["totals"]["all_equal"] is False and result["totals"]["without_data"] == []
    assert "MISMATCH" in summary.render(result) and "1/1" in summary.render(result)


def test_unscored_kinds_show_what_was_injected_and_a_silent_provider_is_named(tmp_path):
    """Financefeast's prices carry no id: drops (if someone injects them) are shown, not scored."""
    def price(ts: int, event: str, **extra) -> dict:
        ids = {"kind": "price", "instrument": "AIR.NZ", "event_ns": ts}
        return {"ts_ns": ts, "event": event, "conn": 1, **extra, "ids": [ids] if event == "fault" else ids}

    feed = ProviderState("financefeast", journal(tmp_path, "financefeast", [
        price(10, "sent"), price(20, "fault", fault="drop"), price(30, "fault", fault="drop"), price(40, "sent")]))
    result = summary.build([feed], CleanTopics(), FREEZE, THAW, seconds=1, bootstrap="b", run_dir="r",
                           skipped={"schwab": "no normalizer"}, exit_codes={})
    gaps = result["providers"]["financefeast"]["anomalies"]["by_kind"]["GAP"]
    assert gaps == {"injected": 2, "detected": 0, "scored": False, "equal": None}
    assert result["totals"]["injected"]["GAP"] == 0 and result["totals"]["all_equal"] is True
    assert result["totals"]["without_data"] == ["financefeast"]
    text = summary.render(result)
    assert "2/-" in text and "NO DATA from financefeast" in text and "skipped schwab: no normalizer" in text
