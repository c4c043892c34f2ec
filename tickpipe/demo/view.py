"""The live view: a full-screen table on a terminal, one JSON log line per period otherwise.

A :class:`Snapshot` is what one refresh shows; :func:`render_table` and :func:`log_line`
turn it into text. Nothing here reads processes or Kafka.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tickpipe.demo.scoring import KINDS

CLEAR = "\x1b[H\x1b[2J"
SHORT = {"GAP": "gap", "OUT_OF_ORDER": "ooo", "DUPLICATE": "dup", "DLQ": "dlq", "RESET": "reset"}


@dataclass
class ProviderRow:
    provider: str
    state: str = "starting"           # up / connecting / down
    frames_per_s: float = 0.0
    ticks_per_s: float = 0.0
    reconnects: int = 0
    injected: dict = field(default_factory=dict)   # kind -> count (journals so far)
    detected: dict = field(default_factory=dict)   # kind -> count (alerts, dead letters so far)
    p50_ms: float | None = None
    p99_ms: float | None = None
    scored: tuple[str, ...] = KINDS                # kinds this provider's checks can detect


@dataclass
class Snapshot:
    elapsed_s: float
    phase: str                         # running / stopping
    bootstrap: str
    rows: list[ProviderRow]
    ticks_per_s_by_kind: dict[str, float]
    lag: int | None
    dlq: int
    alerts: int
    skipped: dict[str, str] = field(default_factory=dict)


def _num(v, fmt: str = "{:.0f}") -> str:
    return "?" if v is None else fmt.format(v)


def _cell(r: ProviderRow, kind: str) -> str:
    repeats = r.injected.get("FEED_REPEAT", 0) if kind == "DUPLICATE" else 0   # the feed's own, after a resync
    return (f"{r.injected.get(kind, 0)}{f'+{repeats}' if repeats else ''}/"
            f"{r.detected.get(kind, 0) if kind in r.scored else '-'}")


def render_table(s: Snapshot) -> str:
    """The full-screen text of one refresh (without the clear-screen code)."""
    kinds = "  ".join(f"{SHORT[k]:>9}" for k in KINDS)
    head = f"{'provider':<18} {'state':<10} {'frames/s':>8} {'ticks/s':>8} {'reconn':>6}  {kinds}  {'p50 ms':>7} {'p99 ms':>7}"
    lines = [f"tickpipe demo  {s.elapsed_s:5.0f}s  {s.phase}  broker {s.bootstrap}   Ctrl-C stops",
             "", head, "-" * len(head)]
    for r in s.rows:
        cells = "  ".join(f"{_cell(r, k):>9}" for k in KINDS)
        lines.append(f"{r.provider:<18} {r.state:<10} {r.frames_per_s:>8.1f} {r.ticks_per_s:>8.1f} {r.reconnects:>6}  "
                     f"{cells}  {_num(r.p50_ms, '{:.1f}'):>7} {_num(r.p99_ms, '{:.1f}'):>7}")
    by_kind = "  ".join(f"{k} {v:.1f}" for k, v in sorted(s.ticks_per_s_by_kind.items()) if v or k) or "none yet"
    lines += ["", "anomalies: injected/detected so far (- not detectable); journals trail by a moment, "
                  "the final summary compares them exactly",
              f"clean ticks/s by kind: {by_kind}",
              f"consumer lag: {_num(s.lag)} raw records   alerts: {s.alerts}   dead letters: {s.dlq}"]
    for provider, why in s.skipped.items():
        lines.append(f"skipped {provider}: {why}")
    lines.append("second terminal: tickpipe tail ticks.trade   (with TICKPIPE_KAFKA_BOOTSTRAP_SERVERS="
                 f"{s.bootstrap})")
    return "\n".join(lines)


def log_line(s: Snapshot) -> str:
    """One JSON line for a log (stdout is not a terminal)."""
    doc = {"event": "demo_status", "elapsed_s": round(s.elapsed_s, 1), "phase": s.phase, "lag": s.lag,
           "alerts": s.alerts, "dlq": s.dlq,
           "ticks_per_s": {k: round(v, 1) for k, v in sorted(s.ticks_per_s_by_kind.items())},
           "providers": {r.provider: {"state": r.state, "frames_per_s": round(r.frames_per_s, 1),
                                      "ticks_per_s": round(r.ticks_per_s, 1), "reconnects": r.reconnects,
                                      "injected": {k: r.injected.get(k, 0) for k in KINDS},
                                      "detected": {k: r.detected.get(k, 0) for k in KINDS},
                                      "p50_ms": r.p50_ms, "p99_ms": r.p99_ms} for r in s.rows}}
    return json.dumps(doc, separators=(",", ":"))


class Screen:
    """Writes snapshots to ``out``: redraw on a terminal, a log line every ``log_every`` s otherwise."""

    def __init__(self, out, tty: bool, log_every: float = 5.0) -> None:
        self.out, self.tty, self.log_every = out, tty, log_every
        self._last_log: float | None = None

    def show(self, s: Snapshot) -> None:
        if self.tty:
            self.out.write(CLEAR + render_table(s) + "\n")
        elif self._last_log is None or s.elapsed_s - self._last_log >= self.log_every:
            self._last_log = s.elapsed_s
            self.out.write(log_line(s) + "\n")
        self.out.flush()
