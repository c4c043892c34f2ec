"""CPU per frame of the processor's own code, in-process, no Kafka.

    python -m bench.pipeline_cpu [--frames 50000] [--repeat 5] [--providers financefeast,alpaca,coinbase]

Real frames from each emulator's own generator, in the raw envelope exactly as the producer
writes it (key, value, headers; every connection starts with its ``session_start`` marker),
run through ``Pipeline.for_provider(provider, checks=[IntegrityCheck(provider)])``:

* ``total``: ``pipeline.handle(key, value, headers, source)`` for every record;
* the stages alone, over the same records: ``envelope`` (``RawRecord.from_kafka``),
  ``normalizer`` (``Frame`` + the provider normalizer), ``avro`` (``AvroEncoder.encode`` of
  every record), ``integrity`` (``IntegrityCheck.check`` on a fresh stage); ``rest`` is
  ``total`` minus the stages: ``FrameResult``, outputs, metrics, dispatch, and the stages
  costing more when they take turns on every frame than each alone in a tight loop (caches:
  timed inside the real loop, every stage is 1.3-1.7x its figure here);
* ``baseline``: ``orjson.loads`` of the same values, in the same run (the machine is shared:
  compare ratios against it, not absolute figures across runs).

CPU time (``time.process_time``), each measurement repeated ``--repeat`` times, interleaved,
the minimum kept. Progress on stderr, the figures as one JSON object on the last stdout line.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from typing import Callable

import orjson

from bench.common import emit, raw_frames, say
from tickpipe.envelope import KIND_SESSION_START, RawRecord, encode_marker
from tickpipe.processors.deadletter import Source

Wire = tuple[bytes, bytes, list[tuple[str, bytes]]]


# ----- frames, from the emulators' own generators -----
def _start_markers(provider: str, conns: list[str], now: int) -> list[RawRecord]:
    return [RawRecord(provider, conn, "s1", 1, now, encode_marker(KIND_SESSION_START, attempt=1),
                      kind=KIND_SESSION_START) for conn in conns]


def financefeast_frames(frames: int, conns: list[str]) -> list[RawRecord]:
    return raw_frames(frames, conns)


def _interleaved(provider: str, conns: list[str], frames: int, make: Callable[[str, int], Callable[[int], bytes]]) -> list[RawRecord]:
    """``frames`` data frames round-robin over ``conns``, each connection drawing from its own
    generator (``make(conn, now)``, called with the frame's receive time), after the markers."""
    now = time.time_ns()
    out, seq = _start_markers(provider, conns, now), dict.fromkeys(conns, 1)
    gens = {conn: make(conn, now) for conn in conns}
    for i in range(frames):
        conn = conns[i % len(conns)]
        seq[conn] += 1
        out.append(RawRecord(provider, conn, "s1", seq[conn], now + i * 1000, gens[conn](now + i * 1000)))
    return out


def alpaca_frames(frames: int, conns: list[str], seed: int = 1) -> list[RawRecord]:
    """v2 stock JSON frames, trades and quotes of six symbols: per connection its own account
    market and ``EventSource`` (as the emulator's pump draws them: 1-3 events per frame,
    batched into one array per frame)."""
    from tickpipe.emulators.alpaca_feed import AccountMarket, EventSource, Subscriptions
    from tickpipe.emulators.alpaca_wire import Codec, v2_message

    symbols = ["AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "SPY"]
    codec = Codec(None)

    def make(conn: str, now: int) -> Callable[[int], bytes]:
        market = AccountMarket(symbols, seed, crypto=False, bar_ns=60 * 10**9, open_universe=True)
        subs = Subscriptions(("trades", "quotes"))
        subs.add("trades", symbols)
        subs.add("quotes", symbols)
        rng = random.Random(f"{seed}:{conn}")
        source = EventSource(market, subs, rng)
        return lambda ts: codec.encode([v2_message(e, codec, False) for e in source.tick(rng.randint(1, 3))]).encode()

    return _interleaved("alpaca", conns, frames, make)


def coinbase_frames(frames: int, conns: list[str], seed: int = 1) -> list[RawRecord]:
    """Advanced Trade frames of four products on ``market_trades``, ``ticker`` and ``l2_data``
    (the emulator's ``_market_event`` and ``_send_frame``): per connection its own market and
    ``sequence_num`` from 0."""
    from tickpipe.emulators.coinbase_market import CoinbaseMarket, rfc3339

    products = ("BTC-USD", "ETH-USD", "SOL-USD", "DOGE-USD")

    def make(conn: str, now: int) -> Callable[[int], bytes]:
        market, rng = CoinbaseMarket(products, seed), random.Random(f"{seed}:{conn}")
        pending: list[tuple[str, list]] = []
        sequence = iter(range(1 << 62))

        def frame(ts: int) -> bytes:
            if not pending:
                product = rng.choice(products)
                trades = market.trades(product, rng.randint(1, 3), ts)
                book = market.book_updates(product, ts)
                pending.append(("market_trades", [{"type": "update",
                                                   "trades": [market.trade_json(t) for t in trades[::-1]]}]))
                pending.append(("ticker", [{"type": "update", "tickers": [market.ticker(product)]}]))
                if book:
                    pending.append(("l2_data", [{"type": "update", "product_id": product, "updates": book}]))
            channel, events = pending.pop(0)
            return orjson.dumps({"channel": channel, "client_id": "", "timestamp": rfc3339(ts),
                                 "sequence_num": next(sequence), "events": events})
        return frame

    return _interleaved("coinbase", conns, frames, make)


BUILDERS: dict[str, Callable[[int, list[str]], list[RawRecord]]] = {
    "financefeast": financefeast_frames, "alpaca": alpaca_frames, "coinbase": coinbase_frames}


# ----- measuring -----
def cpu(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(provider: str, frames: int, repeat: int, conns: int) -> dict:
    from tickpipe.avro import AvroEncoder
    from tickpipe.processors.integrity.check import IntegrityCheck
    from tickpipe.processors.normalizers import load_normalizer
    from tickpipe.processors.normalizers.base import Frame, NormalizerState
    from tickpipe.processors.pipeline import FrameResult, Pipeline

    say(f"{provider}: building {frames} frames")
    raws = BUILDERS[provider](frames, [f"{provider}-{n}" for n in range(conns)])
    wire: list[Wire] = [(r.key, r.payload, r.headers()) for r in raws]
    sources = [Source(f"raw.{provider}", 0, i) for i in range(len(wire))]
    data = [r for r in raws if r.kind == "frame"]
    values = [r.payload for r in data]
    normalize, encoder = load_normalizer(provider), AvroEncoder()

    def normalized() -> list:
        state, out = NormalizerState(), []
        for raw in raws:
            if raw.kind != "frame":
                out.append((raw, [], []))
                continue
            frame = Frame(raw, state)
            normalize(frame)
            out.append((raw, frame.records, frame.marks))
        return out

    frames_out = normalized()
    records = [rec for _, recs, _ in frames_out for rec in recs]
    n_records = len(records)

    def total() -> None:
        pipe = Pipeline.for_provider(provider, checks=[IntegrityCheck(provider)])
        handle = pipe.handle
        for (key, value, headers), source in zip(wire, sources):
            result = handle(key, value, headers, source)
            if result.dead_letter is not None:
                raise SystemExit(f"{provider}: dead letter: {result.dead_letter['reason']}")

    def envelope() -> None:
        from_kafka = RawRecord.from_kafka
        for key, value, headers in wire:
            from_kafka(key, value, headers)

    def normalizer() -> None:
        state = NormalizerState()
        for raw in data:
            normalize(Frame(raw, state))

    def avro() -> None:
        encode = encoder.encode
        for rec in records:
            encode(rec.kind, rec)

    def integrity() -> None:
        check = IntegrityCheck(provider).check
        for raw, recs, marks in frames_out:
            check(FrameResult(raw, list(recs), marks))

    def baseline() -> None:
        loads = orjson.loads
        for value in values:
            loads(value)

    stages = {"total": total, "envelope": envelope, "normalizer": normalizer, "avro": avro,
              "integrity": integrity, "baseline": baseline}
    best = dict.fromkeys(stages, float("inf"))
    total()  # warm-up (imports, caches)
    for r in range(repeat):
        for name, fn in stages.items():
            best[name] = min(best[name], cpu(fn))
        say(f"{provider}: round {r + 1}/{repeat}: " + ", ".join(f"{k} {v * 1e6 / len(wire):.2f}" for k, v in best.items()))
    per = {name: round(t * 1e6 / len(wire), 2) for name, t in best.items()}
    per["rest"] = round(per["total"] - sum(per[k] for k in ("envelope", "normalizer", "avro", "integrity")), 2)
    return {"provider": provider, "raw_records": len(wire), "frames": len(data), "records": n_records,
            "records_per_frame": round(n_records / max(1, len(data)), 2), "us_per_frame": per,
            "total_us_per_record": round(best["total"] * 1e6 / max(1, n_records), 2),
            "total_over_baseline": round(best["total"] / best["baseline"], 2) if best["baseline"] else None}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=50_000, help="data frames per provider")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each measurement (minimum kept)")
    parser.add_argument("--conns", type=int, default=4, help="producer connections the frames are spread over")
    parser.add_argument("--providers", default="financefeast,alpaca,coinbase")
    args = parser.parse_args(argv)
    results = [measure(p, args.frames, args.repeat, args.conns) for p in args.providers.split(",") if p]
    emit({"figure": "pipeline_cpu", "unit": "us CPU per raw record (process_time, min of repeats)",
          "frames": args.frames, "repeat": args.repeat, "providers": results})


if __name__ == "__main__":
    main()
