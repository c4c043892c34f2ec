"""What each provider's numbers mean, so each is checked at the scope where it counts.

* ``connection_counter``: the provider's per-connection counter (Coinbase Advanced Trade
  ``sequence_num``, counting every frame from 0, restarting on every connection). Frames
  carry it as records/marks with ``sequence_scope == "connection"``.
* ``sparse_channels``: channels whose per-instrument ``sequence`` skips numbers by design
  (the Exchange feed's ``ticker``/``matches`` see only some of the ``full`` channel's
  events): checked for order only, never for gaps.
* ``trade_ids``: ``"contiguous"`` (each instrument's trade ids grow by one, so a jump is a
  GAP), ``"monotonic"`` (they only grow), or ``None`` (not checked).
* ``event_time``: check that event times do not go backwards per instrument (feeds with no
  sequence numbers: Alpaca, Financefeast, level-one data).
* ``counters_survive_reconnect``: per-instrument counters continue across connections (the
  Exchange feed's product sequence is global), so a jump over a reconnect is a real GAP;
  otherwise they restart with the session and the RESET alert covers the break.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Policy:
    connection_counter: str | None = None
    connection_counter_start: int | None = 0   # its first value on a new connection
    sparse_channels: frozenset[str] = field(default_factory=frozenset)
    trade_ids: str | None = None
    event_time: bool = False
    counters_survive_reconnect: bool = False
    no_event_time_kinds: frozenset[str] = frozenset({"bar", "status", "most_active", "sentiment"})


POLICIES: dict[str, Policy] = {
    "alpaca": Policy(trade_ids="contiguous", event_time=True),
    "tdameritrade": Policy(event_time=True),
    "schwab": Policy(event_time=True),
    "coinbase": Policy(connection_counter="sequence_num", trade_ids="contiguous"),
    "coinbase-exchange": Policy(sparse_channels=frozenset({"ticker", "matches", "ticker_batch", "last_match"}),
                                trade_ids="contiguous", counters_survive_reconnect=True),
    "financefeast": Policy(event_time=True),
    "marketprophit": Policy(),
}


def policy_for(provider: str) -> Policy:
    return POLICIES.get(provider, Policy(event_time=True))
