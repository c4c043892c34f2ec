"""The final summary of a demo run: per provider and totals, as a dict (JSON) and as text."""

from __future__ import annotations

from collections import Counter

from tickpipe.demo.journals import count_faults
from tickpipe.demo.live import ProviderState, alerts_of
from tickpipe.demo.observer import CleanTopics
from tickpipe.demo.scoring import KINDS, compare, detected_anomalies, injected_anomalies

NOT_SCORED = "no scoring counter for this provider: detection is reported, not compared"


def provider_summary(state: ProviderState, seen: CleanTopics, cutoff_ns: int, thaw_ns: int) -> dict:
    """Faults journaled up to ``cutoff_ns`` (the freeze) against what the pipeline reported
    for frames received before ``thaw_ns`` (frames sent after the freeze arrive after it)."""
    provider = state.provider
    ticks = {k: n for (p, k), n in sorted(seen.ticks.items()) if p == provider}
    lines = state.journal.upto(cutoff_ns)
    alerts = alerts_of(seen, provider)
    dlq = seen.dead_letters[provider]
    scored_alerts = [a for a in alerts if (a.get("detected_time") or 0) < thaw_ns]
    scored_dlq = sum(1 for t in seen.dead_letter_times.get(provider, ()) if t < thaw_ns)
    entry = {"frames": int(state.frames), "ticks": ticks, "ticks_total": sum(ticks.values()),
             "reconnects": int(state.reconnects), "resyncs": int(state.resyncs), "dlq": dlq,
             "latency_ms": seen.latency(provider).summary(),
             "faults_journaled": dict(sorted(count_faults(lines).items())),
             "alerts": dict(sorted(Counter(a.get("kind") for a in alerts).items())),
             # frames lost between producer and Kafka (holes in tp-seq): none on a healthy run
             "producer_gaps": sum(int(a.get("missing_count") or 0) for a in alerts
                                  if a.get("kind") == "GAP" and a.get("scope") == "producer")}
    rule = state.rule
    if rule is None:
        entry["anomalies"] = {"scored": False, "note": NOT_SCORED}
        return entry
    injected = injected_anomalies(lines, rule)
    detected = detected_anomalies(scored_alerts, scored_dlq, rule)
    entry["anomalies"] = {"scored": True, "counter": f"{rule.scope}:{rule.counter}",
                          **compare(injected, detected, rule.kinds), **({"note": rule.note} if rule.note else {})}
    return entry


def build(states: list[ProviderState], seen: CleanTopics, cutoff_ns: int, thaw_ns: int, *, seconds: float, bootstrap: str,
          run_dir: str, skipped: dict[str, str], exit_codes: dict[str, int | None]) -> dict:
    providers = {s.provider: provider_summary(s, seen, cutoff_ns, thaw_ns) for s in states}
    totals = {"frames": sum(p["frames"] for p in providers.values()),
              "ticks": sum(p["ticks_total"] for p in providers.values()),
              "dlq": sum(p["dlq"] for p in providers.values()),
              "producer_gaps": sum(p["producer_gaps"] for p in providers.values()),
              "reconnects": sum(p["reconnects"] for p in providers.values()),
              "injected": _scored_total(providers, "injected"), "detected": _scored_total(providers, "detected"),
              "feed_repeats": sum(p["anomalies"].get("by_kind", {}).get("DUPLICATE", {}).get("feed_repeats", 0)
                                  for p in providers.values()),   # expected DUPLICATEs besides the injected
              "all_equal": all(p["anomalies"].get("all_equal", True) for p in providers.values()),
              "without_data": [name for name, p in providers.items() if not p["frames"] or not p["ticks_total"]],
              "undecodable_records": seen.undecodable}
    return {"seconds": round(seconds, 1), "bootstrap_servers": bootstrap, "run_dir": run_dir,
            "providers": providers, "skipped": skipped, "totals": totals, "exit_codes": exit_codes}


def _scored_total(providers: dict, side: str) -> dict[str, int]:
    """Per kind, the sum over providers of the scored rows only."""
    rows = [p["anomalies"].get("by_kind", {}) for p in providers.values()]
    return {k: sum(r[k][side] for r in rows if k in r and r[k]["scored"]) for k in KINDS}


def render(summary: dict) -> str:
    """A short text table of the summary for the terminal."""
    out = [f"demo summary after {summary['seconds']:g}s (logs and journals: {summary['run_dir']})",
           f"{'provider':<18} {'frames':>7} {'ticks':>7} {'reconn':>6}  " + "  ".join(f"{k.lower():>12}" for k in KINDS)
           + f"  {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"]
    for name, p in summary["providers"].items():
        by_kind = p["anomalies"].get("by_kind")
        cells = "  ".join(f"{_pair(by_kind, k):>12}" for k in KINDS) if by_kind else p["anomalies"]["note"]
        lat = p["latency_ms"]
        out.append(f"{name:<18} {p['frames']:>7} {p['ticks_total']:>7} {p['reconnects']:>6}  {cells}  "
                   f"{_ms(lat['p50']):>7} {_ms(lat['p99']):>7} {_ms(lat['max']):>7}")
    t = summary["totals"]
    out.append(f"{'total':<18} {t['frames']:>7} {t['ticks']:>7} {t['reconnects']:>6}  "
               + "  ".join(f"{_total(t, k):>12}" for k in KINDS))
    out.append("detected equals injected for every scored provider and kind" if t["all_equal"]
               else "MISMATCH: detected differs from injected (see the table: injected/detected)")
    for name in t["without_data"]:
        out.append(f"NO DATA from {name}: see {name}'s logs in {summary['run_dir']}")
    for name, p in summary["providers"].items():
        repeats = p["anomalies"].get("by_kind", {}).get("DUPLICATE", {}).get("feed_repeats")
        if repeats:
            out.append(f"{name}: {repeats} more duplicate(s) sent by the feed itself, as expected (a resubscribe "
                       f"after a gap sends an initial ticker and last match that repeat ones already seen): +{repeats}")
        if p["anomalies"].get("note"):
            out.append(f"{name}: {p['anomalies']['note']} (-: not scored)")
    for provider, why in summary["skipped"].items():
        out.append(f"skipped {provider}: {why}")
    return "\n".join(out)


def _pair(by_kind: dict, kind: str) -> str:
    row = by_kind[kind]
    if not row["scored"]:
        return f"{row['injected']}/-"
    extra = f"+{row['feed_repeats']}" if row.get("feed_repeats") else ""
    return f"{row['injected']}{extra}/{row['detected']}" + ("" if row["equal"] else " !")


def _total(totals: dict, kind: str) -> str:
    extra = f"+{totals['feed_repeats']}" if kind == "DUPLICATE" and totals["feed_repeats"] else ""
    return f"{totals['injected'][kind]}{extra}/{totals['detected'][kind]}"


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}"
