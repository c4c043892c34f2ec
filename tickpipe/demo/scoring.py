"""Injected versus detected anomalies, per provider and kind: pure functions.

Each provider is scored at the counter where its faults show (the emulator modules say
which messages are faultable and what their journal ``ids`` hold):

| provider | counter (alert scope) | journal scope of a faultable message |
| --- | --- | --- |
| coinbase | ``sequence_num`` (connection), starts at 0 | the connection |
| alpaca | ``trade_id`` (instrument) | message kind (only trades are faultable) + instrument |
| tdameritrade, schwab | ``seq`` (instrument) | service + instrument |
| coinbase-exchange | ``trade_id`` (instrument); swaps and repeats at ``sequence`` | message kind + instrument |
| financefeast | ``event_time`` (instrument): no drops injected | instrument |
| marketprophit | ``sequence`` (instrument), from the stream's ``ts`` cadence | path + ticker |

What a consumer can see of the journal (up to the moment the feeds were frozen):

* drop -> GAP, one missing value, if a higher value of the same scope was sent later on the
  same connection, and (unless the counter's start is fixed) a lower one earlier (a message
  held back for a swap and released after the drop witnesses nothing), and its counter
  is checked for gaps (the Exchange ticker's trade ids are checked for order only);
* reorder -> OUT_OF_ORDER, if both swapped messages have the same scope (also right after a
  drop: the trackers remember which held value overtook which);
* duplicate -> DUPLICATE, always; malformed -> one dead letter, always;
* not injected but a repeat all the same: the Exchange's initial ticker and last match after a
  (re)subscribe (a resync, a reconnect) repeat a sequence already seen when no trade came in
  between -> DUPLICATE (``FEED_REPEAT``: expected besides the injected ones);
* disconnect -> RESET, if the emulator later accepted a new connection (the producer's session
  starts when the websocket opens, before any data: its start marker is what the RESET answers).

Detected: GAP ``missing_count`` summed, OUT_OF_ORDER / DUPLICATE alerts counted, at the
scoring counter only (a lost Coinbase trade frame is also a trade-id gap, and a swap of two
Exchange matches is out of order for both the sequence and the trade-id check: counted once);
RESET at connection scope; dead letters of ``dlq.<provider>``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tickpipe.demo.journals import fault_kind
from tickpipe.processors.integrity.stage import OUTAGE_GAP

KINDS = ("GAP", "OUT_OF_ORDER", "DUPLICATE", "DLQ", "RESET")
FAULT_TO_KIND = {"drop": "GAP", "reorder": "OUT_OF_ORDER", "duplicate": "DUPLICATE", "malformed": "DLQ",
                 "disconnect": "RESET"}


@dataclass(frozen=True)
class ScoringCounter:
    counter: str                       # the alerts' ``counter``
    scope: str                         # the alerts' ``scope``: connection or instrument
    scope_fields: tuple[str, ...]      # journal ids fields naming the message's scope
    value_field: str | None = None     # journal ids field holding the checked counter's value
    known_start: bool = False          # the counter's first value on a connection is fixed
    kinds: tuple[str, ...] = KINDS     # the kinds a consumer can detect for this provider
    note: str = ""                     # why some kinds are not scored
    first_check: tuple[tuple[str, str], ...] = ()   # (kind, counter): a check that runs first sees it
    order_only: frozenset[str] = frozenset()        # journal ids "kind"s checked for order, never for gaps
    snapshots: tuple[tuple[str, str], ...] = ()     # (kind sent on every subscribe, kind whose check it shares)
    snapshot_field: str = ""                        # the journal ids field that check compares

    def counter_for(self, kind: str) -> str:
        return dict(self.first_check).get(kind, self.counter)


SCORING: dict[str, ScoringCounter] = {
    "coinbase": ScoringCounter("sequence_num", "connection", (), "seq", known_start=True),
    "alpaca": ScoringCounter("trade_id", "instrument", ("kind", "instrument"), "trade_id"),
    "tdameritrade": ScoringCounter("seq", "instrument", ("service", "instrument"), "product_seq"),
    "schwab": ScoringCounter("seq", "instrument", ("service", "instrument"), "product_seq"),
    # ticker and matches records pass the (sparse, order-only) product sequence check before
    # the trade-id check: repeats stop there, swaps are reported there first; only trades
    # (matches) have their ids checked for gaps, a ticker is a level-one record
    "coinbase-exchange": ScoringCounter("trade_id", "instrument", ("kind", "instrument"), "trade_id",
                                        first_check=(("DUPLICATE", "sequence"), ("OUT_OF_ORDER", "sequence")),
                                        order_only=frozenset({"ticker"}), snapshot_field="product_seq",
                                        snapshots=(("ticker_initial", "ticker"), ("last_match", "last_match"))),
    "financefeast": ScoringCounter("event_time", "instrument", ("instrument",), "event_ns",
                                   kinds=("OUT_OF_ORDER", "DUPLICATE", "DLQ", "RESET"),
                                   note="no ids in the feed: a dropped price is invisible, so none is injected"),
    # each (path, ticker) stream's ts advances by exactly its cadence: the normalizer turns it
    # into a contiguous per-instrument sequence
    "marketprophit": ScoringCounter("sequence", "instrument", ("path", "ticker"), "event_ns"),
}


def _scope(ids: dict | None, fields: tuple[str, ...]) -> tuple:
    ids = ids if isinstance(ids, dict) else {}
    return tuple(ids.get(f) for f in fields)


def visible_faults(lines: list[dict], rule: ScoringCounter) -> Counter:
    """Injected faults a consumer can detect, by alert kind (see the module docstring)."""
    sent: dict[tuple, list[int]] = {}        # (conn, scope) -> positions of sent lines
    connects: list[tuple[int, int]] = []     # (position of a connection's accept, conn)
    for pos, line in enumerate(lines):
        if line.get("event") == "sent":
            key = (line.get("conn"), _scope(line.get("ids"), rule.scope_fields))
            sent.setdefault(key, []).append(pos)
        elif line.get("event") == "connect":
            connects.append((pos, line.get("conn")))

    def around(pos: int, conn, ids) -> tuple[bool, bool]:
        """Was a lower value of the scope received before ``pos``, a higher one after it?"""
        positions = sent.get((conn, _scope(ids, rule.scope_fields)), [])
        value = ids.get(rule.value_field) if rule.value_field else None
        if value is None:
            return any(p < pos for p in positions), any(p > pos for p in positions)
        values = [(p, lines[p]["ids"].get(rule.value_field)) for p in positions]
        return (any(p < pos and v is not None and v < value for p, v in values),
                any(p > pos and v is not None and v > value for p, v in values))

    out, disconnected = Counter(), set()
    out["FEED_REPEAT"] = feed_repeats(lines, rule)
    for pos, line in enumerate(lines):
        kind, conn = fault_kind(line), line.get("conn")
        ids = line.get("ids") or [{}]
        if kind == "drop":
            before, after = around(pos, conn, ids[0])
            if after and (before or rule.known_start) and ids[0].get("kind") not in rule.order_only:
                out["GAP"] += 1
        elif kind == "reorder" and len(ids) == 2:
            if _scope(ids[0], rule.scope_fields) == _scope(ids[1], rule.scope_fields):
                out["OUT_OF_ORDER"] += 1
        elif kind == "duplicate":
            out["DUPLICATE"] += 1
        elif kind == "malformed":
            out["DLQ"] += 1
        elif kind == "disconnect" and conn not in disconnected:
            disconnected.add(conn)
            if any(p > pos and c != conn for p, c in connects):
                out["RESET"] += 1
    return out


def feed_repeats(lines: list[dict], rule: ScoringCounter, recent_size: int = 64) -> int:
    """Snapshots the feed sends on a (re)subscribe that repeat a value their check has seen among
    its last ``recent_size`` (as the integrity stage's order-only trackers remember): the
    Exchange's initial ticker and last match after a resync or a reconnect. Any connection:
    the Exchange's checks survive reconnects."""
    group = {of: of for _snap, of in rule.snapshots} | dict(rule.snapshots)
    snapshot_kinds = {snap for snap, _of in rule.snapshots}
    recent: dict[tuple, list] = {}
    repeats = 0
    for line in lines:
        ids = line.get("ids")
        if line.get("event") != "sent" or not isinstance(ids, dict) or ids.get("kind") not in group:
            continue
        value = ids.get(rule.snapshot_field)
        if value is None:
            continue
        seen = recent.setdefault((group[ids["kind"]], ids.get("instrument")), [])
        if value in seen:                        # a repeat: the check drops it and does not remember it again
            repeats += ids["kind"] in snapshot_kinds
            continue
        seen.append(value)
        del seen[:-recent_size]
    return repeats


def injected_anomalies(lines: list[dict], rule: ScoringCounter) -> Counter:
    """By alert kind: the visible faults for the kinds ``rule`` scores, every journaled one for the rest."""
    from tickpipe.demo.journals import count_faults

    injected = visible_faults(lines, rule)
    for fault, n in count_faults(lines).items():
        kind = FAULT_TO_KIND.get(fault)
        if kind is not None and kind not in rule.kinds:
            injected[kind] = n
    return injected


def detected_anomalies(alerts: list[dict], dead_letters: int, rule: ScoringCounter) -> Counter:
    """What the pipeline reported for one provider, by kind, at its scoring counter."""
    out = Counter({"DLQ": dead_letters})
    for alert in alerts:
        kind = alert.get("kind")
        if kind == "RESET" and alert.get("scope") == "connection":
            out["RESET"] += 1
        elif alert.get("counter") != rule.counter_for(kind) or alert.get("scope") != rule.scope:
            continue
        elif kind == "GAP" and alert.get("detail") == OUTAGE_GAP:
            continue   # messages the feed sent while the connection was down: the RESET's doing
        elif kind == "GAP":
            out["GAP"] += int(alert.get("missing_count") or 0)
        elif kind in ("OUT_OF_ORDER", "DUPLICATE"):
            out[kind] += 1
    return out


def compare(injected: Counter, detected: Counter, scored: tuple[str, ...] = KINDS) -> dict:
    """``{"by_kind": {kind: {"injected", "detected", "scored", "equal"}}, "all_equal"}``;
    ``equal`` is None for a kind that is not ``scored``, and ``all_equal`` covers scored kinds.
    The feed's own repeats (``injected["FEED_REPEAT"]``) are expected DUPLICATEs besides the
    injected ones: that row then also has ``feed_repeats``."""
    table = {}
    for k in KINDS:
        i, d = int(injected.get(k, 0)), int(detected.get(k, 0))
        extra = int(injected.get("FEED_REPEAT", 0)) if k == "DUPLICATE" else 0
        table[k] = {"injected": i, "detected": d, "scored": k in scored,
                    "equal": (i + extra == d) if k in scored else None, **({"feed_repeats": extra} if extra else {})}
    return {"by_kind": table, "all_equal": all(row["equal"] for row in table.values() if row["scored"])}
