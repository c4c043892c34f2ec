"""Which providers the demo runs, and with which fault mix.

A provider runs when it has all three parts: an emulator, a producer adapter and a
normalizer; otherwise it is skipped with the reason.

The fault mix is chosen so that every injected fault a consumer *can* see is seen exactly
once at the provider's scoring counter (:mod:`tickpipe.demo.scoring` says which can be seen):

* drop / reorder / duplicate (1 % each) only hit faultable messages, each of which carries a
  contiguous or monotonic counter (Coinbase ``sequence_num``, Alpaca per-symbol trade ids,
  the streamers' per-key ``seq``, Exchange trade ids, Financefeast per-symbol times);
* malformed (0.5 %) inserts garbage frames, each of which becomes exactly one dead letter;
* disconnect_every=20 with close code 1011: an orderly close the emulator also registers
  (Alpaca allows one connection per account, so after a bare TCP drop the reconnect could be
  refused); every reconnect is one RESET. Not for coinbase-exchange: its trade ids run on
  across a reconnect, and a drop of the first trade after one is not told apart from the
  trades missed while disconnected the same way by the integrity stage and by the journal;
* no stalls, auth failures, token expiry or slow-client faults: they change timing and
  session counts, not sequences, and would make the RESET count depend on timing;
* Financefeast gets no drops (no id shows one, so the summary does not score them).
"""

from __future__ import annotations

MESSAGE_FAULTS = "drop=0.01,reorder=0.01,duplicate=0.01,malformed=0.005"
DISCONNECTS = "disconnect_every=20,close_code=1011"

FAULT_MIX: dict[str, str] = {
    "alpaca": f"{MESSAGE_FAULTS},{DISCONNECTS}",
    "tdameritrade": f"{MESSAGE_FAULTS},{DISCONNECTS}",
    "schwab": f"{MESSAGE_FAULTS},{DISCONNECTS}",
    "coinbase": f"{MESSAGE_FAULTS},{DISCONNECTS}",
    "coinbase-exchange": MESSAGE_FAULTS,
    "financefeast": f"reorder=0.01,duplicate=0.01,malformed=0.005,{DISCONNECTS}",   # no ids: a drop is invisible
    "marketprophit": f"{MESSAGE_FAULTS},{DISCONNECTS}",
}


def missing_part(provider: str) -> str | None:
    """Why ``provider`` cannot run in the demo (None: it can)."""
    from tickpipe import emulators, producers
    from tickpipe.demo.emulated import PRODUCER_ENV
    from tickpipe.processors.normalizers import NormalizerMissing, load_normalizer

    try:
        emulators.load(provider)
    except (LookupError, ValueError, ImportError) as exc:
        return f"no emulator ({exc})"
    try:
        producers.load(provider)
    except (LookupError, ValueError, ImportError) as exc:
        return f"no producer adapter ({exc})"
    try:
        load_normalizer(provider)
    except (NormalizerMissing, ImportError) as exc:
        return f"no normalizer ({exc})"
    if provider not in PRODUCER_ENV:
        return "no emulator settings in tickpipe.demo.emulated"
    return None


def choose(requested: list[str]) -> tuple[list[str], dict[str, str]]:
    """(providers to run, {skipped provider: reason})."""
    running, skipped = [], {}
    for provider in requested:
        why = missing_part(provider)
        if why is None:
            running.append(provider)
        else:
            skipped[provider] = why
    return running, skipped
