"""Injected versus detected: which journaled faults a consumer can see, and what counts as seen."""

from __future__ import annotations

from collections import Counter

from tickpipe.demo.scoring import SCORING, ScoringCounter, compare, detected_anomalies, visible_faults

PER_SYMBOL = ScoringCounter("trade_id", "instrument", ("instrument",))
PER_CONNECTION = ScoringCounter("sequence_num", "connection", (), known_start=True)


def sent(conn: int, sym: str, n: int) -> dict:
    return {"event": "sent", "conn": conn, "ids": {"instrument": sym, "trade_id": n}}


def fault(conn: int, name: str, *ids: tuple[str, int]) -> dict:
    return {"event": "fault", "conn": conn, "fault": name, "ids": [{"instrument": s, "trade_id": n} for s, n in ids]}


def test_a_drop_counts_only_between_two_messages_of_its_scope_on_its_connection():
    lines = [fault(1, "drop", ("A", 1)),                       # first of A: nothing before it to start the count
             sent(1, "A", 2), fault(1, "drop", ("A", 3)), sent(1, "A", 4),   # visible
             fault(1, "drop", ("B", 7)), sent(1, "B", 8),       # first of B
             fault(1, "drop", ("A", 5)),                        # the last of A on connection 1
             sent(2, "A", 6)]                                   # a new connection does not witness it
    assert visible_faults(lines, PER_SYMBOL)["GAP"] == 1


def test_a_counter_with_a_fixed_start_sees_a_drop_of_its_first_value():
    lines = [{"event": "fault", "conn": 1, "fault": "drop", "ids": [{"seq": 0}]},
             {"event": "sent", "conn": 1, "ids": {"seq": 1}}]
    assert visible_faults(lines, PER_CONNECTION)["GAP"] == 1
    assert visible_faults(lines, PER_SYMBOL)["GAP"] == 0


def test_a_swap_counts_within_one_scope_also_right_after_a_drop():
    lines = [sent(1, "A", 1), fault(1, "reorder", ("A", 2), ("A", 3)), sent(1, "A", 3), sent(1, "A", 2),  # visible
             fault(1, "reorder", ("A", 4), ("B", 9)), sent(1, "B", 9), sent(1, "A", 4),                   # two scopes
             fault(1, "drop", ("A", 5)), fault(1, "reorder", ("A", 6), ("A", 7)), sent(1, "A", 7), sent(1, "A", 6)]
    assert visible_faults(lines, PER_SYMBOL)["OUT_OF_ORDER"] == 2


def test_repeats_and_garbage_always_count():
    lines = [sent(1, "A", 1), fault(1, "duplicate", ("A", 1)), sent(1, "A", 1),
             {"event": "fault", "conn": 1, "fault": "malformed", "frame": "[[[["},
             {"event": "fault", "conn": 1, "fault": "malformed", "frame": "null"}]
    seen = visible_faults(lines, PER_SYMBOL)
    assert (seen["DUPLICATE"], seen["DLQ"]) == (1, 2)


def test_a_disconnect_is_a_reset_only_if_a_later_connection_was_accepted():
    lines = [{"event": "connect", "conn": 1}, sent(1, "A", 1),
             {"event": "fault", "conn": 1, "fault": "disconnect", "code": 1011},
             {"event": "disconnect", "conn": 1, "reason": "fault", "code": 1011},    # the same disconnect, twice
             {"event": "connect", "conn": 2}, sent(2, "A", 2),
             {"event": "disconnect", "conn": 2, "reason": "fault", "code": 1011},
             {"event": "connect", "conn": 3},   # frozen before any data: the producer's new session is a RESET all the same
             {"event": "disconnect", "conn": 3, "reason": "fault", "code": 1011}]    # the last: no session follows
    assert visible_faults(lines, PER_SYMBOL)["RESET"] == 2


def alert(kind: str, counter: str, scope: str = "instrument", missing: int = 1) -> dict:
    return {"kind": kind, "counter": counter, "scope": scope, "missing_count": missing}


def test_detected_counts_the_scoring_counter_only():
    alerts = [alert("GAP", "trade_id", missing=3), alert("GAP", "tp_seq", "producer", missing=5),
              alert("OUT_OF_ORDER", "trade_id"), alert("OUT_OF_ORDER", "event_time"),
              alert("DUPLICATE", "trade_id"), alert("RESET", "sequence_num", "connection"),
              alert("HEALED", "trade_id")]
    got = detected_anomalies(alerts, dead_letters=2, rule=PER_SYMBOL)
    assert got == Counter({"GAP": 3, "OUT_OF_ORDER": 1, "DUPLICATE": 1, "RESET": 1, "DLQ": 2})


def test_a_check_that_runs_first_owns_its_kind():
    exchange = SCORING["coinbase-exchange"]
    alerts = [alert("DUPLICATE", "sequence"), alert("DUPLICATE", "trade_id"), alert("GAP", "trade_id", missing=2)]
    got = detected_anomalies(alerts, 0, exchange)
    assert (got["DUPLICATE"], got["GAP"]) == (1, 2)


def test_compare_flags_every_difference_and_ignores_unscored_kinds():
    result = compare(Counter({"GAP": 2, "DLQ": 1, "OUT_OF_ORDER": 4}), Counter({"GAP": 2, "DLQ": 0}),
                     scored=("GAP", "DLQ"))
    assert result["by_kind"]["GAP"] == {"injected": 2, "detected": 2, "scored": True, "equal": True}
    assert result["by_kind"]["DLQ"]["equal"] is False
    assert result["by_kind"]["OUT_OF_ORDER"] == {"injected": 4, "detected": 0, "scored": False, "equal": None}
    assert result["all_equal"] is False
    assert compare(Counter({"GAP": 1}), Counter({"GAP": 1}))["all_equal"] is True


def test_an_order_only_channel_hides_its_drops():
    exchange = SCORING["coinbase-exchange"]

    def line(event: str, kind: str, n: int, fault_name: str | None = None) -> dict:
        ids = {"kind": kind, "instrument": "BTC-USD", "trade_id": n}
        return {"event": event, "conn": 1, "fault": fault_name, "ids": [ids]} if fault_name else \
            {"event": event, "conn": 1, "ids": ids}

    lines = [line("sent", "match", 1), line("sent", "ticker", 1),
             line("fault", "match", 2, "drop"), line("fault", "ticker", 2, "drop"),
             line("sent", "match", 3), line("sent", "ticker", 3)]
    assert visible_faults(lines, exchange)["GAP"] == 1


def test_a_message_released_after_a_drop_does_not_witness_it():
    """Alpaca: trade 12 held for a swap, 13 dropped, 12 released, then the connection ends."""
    alpaca = SCORING["alpaca"]

    def trade(event: str, n: int, fault_name: str | None = None) -> dict:
        ids = {"kind": "trade", "instrument": "MSFT", "trade_id": n}
        return {"event": event, "conn": 1, "fault": fault_name, "ids": [ids]} if fault_name else \
            {"event": event, "conn": 1, "ids": ids}

    quote = {"event": "sent", "conn": 1, "ids": {"kind": "quote", "instrument": "MSFT"}}
    lines = [trade("sent", 11), trade("fault", 13, "drop"), trade("sent", 12), quote]
    assert visible_faults(lines, alpaca)["GAP"] == 0          # neither 12 nor a quote is a higher trade id
    assert visible_faults(lines + [trade("sent", 14)], alpaca)["GAP"] == 1


def test_an_initial_ticker_repeating_the_last_one_is_an_expected_duplicate():
    """A resync resubscribes the Exchange ticker: its initial ticker repeats the last sequence."""
    exchange = SCORING["coinbase-exchange"]

    def ticker(kind: str, seq: int) -> dict:
        return {"event": "sent", "conn": 1, "ids": {"kind": kind, "instrument": "BTC-USD", "product_seq": seq,
                                                    "trade_id": seq - 100}}

    lines = [ticker("ticker_initial", 150), ticker("last_match", 150),  # the first subscribe: nothing to repeat
             ticker("ticker", 151), ticker("ticker", 152), ticker("ticker_initial", 152),   # a resync: a repeat
             ticker("last_match", 152),                     # a last match is checked apart: first of its kind
             ticker("ticker", 153), ticker("ticker_initial", 154),                          # newer: no repeat
             ticker("last_match", 152)]                     # a reconnect, no trade since: repeats the last one
    seen = visible_faults(lines, exchange)
    assert (seen["DUPLICATE"], seen["FEED_REPEAT"]) == (0, 2)
    row = compare(seen, Counter({"DUPLICATE": 2}))["by_kind"]["DUPLICATE"]
    assert row == {"injected": 0, "detected": 2, "scored": True, "equal": True, "feed_repeats": 2}


def test_a_gap_across_a_reconnect_is_not_taken_for_an_injected_drop():
    from tickpipe.processors.integrity.stage import OUTAGE_GAP

    outage = {**alert("GAP", "trade_id", missing=7), "detail": OUTAGE_GAP}   # sent while we were disconnected
    got = detected_anomalies([outage, alert("GAP", "trade_id", missing=1)], 0, SCORING["coinbase-exchange"])
    assert got["GAP"] == 1
