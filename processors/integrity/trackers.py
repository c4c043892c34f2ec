"""Sequence trackers: pure state machines for one counter each, testable without Kafka.

:class:`ContiguousTracker` is for counters that grow by exactly one (our ``tp-seq``, Coinbase
``sequence_num``, the Exchange feed's ``full``-channel ``sequence``, contiguous trade ids). A
value ahead of the next expected one is held in a bounded reorder window; the missing value
arriving within the window releases everything in order (OUT_OF_ORDER); a hole still open
when the window closes is a GAP, and a late value that fills an alerted hole is HEALED. A
value already seen is a DUPLICATE and is not released.

:class:`MonotonicTracker` is for counters that only must not go backwards (event times,
sequences seen through channels that skip numbers by design): a regression is OUT_OF_ORDER
(released: the record is genuine, only late); a value seen recently is a DUPLICATE.

Time is whatever the caller passes as ``now_ns`` (the frame's receive time in a replay, the
wall clock in a live timer), so replays are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")

GAP = "gap"
OUT_OF_ORDER = "out_of_order"
DUPLICATE = "duplicate"
RESET = "reset"
STALE = "stale"
HEALED = "healed"
KINDS = (GAP, OUT_OF_ORDER, DUPLICATE, RESET, STALE, HEALED)


@dataclass(frozen=True, slots=True)
class Finding:
    """What a tracker noticed. ``first``/``last``: the missing (GAP), late (OUT_OF_ORDER),
    repeated (DUPLICATE) or healed (HEALED) values; ``lateness``: how many later values
    overtook a late one (OUT_OF_ORDER) or how far an event time went back."""

    kind: str
    first: int
    last: int
    expected: int | None = None
    observed: int | None = None
    lateness: int | None = None

    @property
    def count(self) -> int:
        return self.last - self.first + 1


@dataclass(slots=True)
class Step(Generic[T]):
    released: list[T]
    findings: list[Finding]


class ContiguousTracker(Generic[T]):
    """One +1 counter with a reorder window of ``window_items`` values and ``window_ns``."""

    __slots__ = ("window_items", "window_ns", "expected", "held", "holes", "max_holes", "arrivals", "floor")

    def __init__(self, window_items: int = 1000, window_ns: int = 500_000_000, max_holes: int = 256,
                 start: int | None = None) -> None:
        """``start``: the counter's first value when the protocol fixes it (our tp-seq starts at 1,
        Coinbase ``sequence_num`` at 0); otherwise the first value seen starts it."""
        self.window_items, self.window_ns, self.max_holes = window_items, window_ns, max_holes
        self.expected: int | None = start
        self.floor: int | None = start  # lowest value accounted for
        self.held: dict[int, tuple[T, int, int]] = {}  # value -> (item, arrival time, arrival number)
        self.holes: list[list[int]] = []               # unfilled [first, last, alerted] ranges
        self.arrivals = 0

    def offer(self, value: int, item: T, now_ns: int) -> Step[T]:
        if value == self.expected and not self.held:  # the usual case: next in line, nothing held
            self.arrivals += 1
            self.expected = value + 1
            return Step([item], [])
        step: Step[T] = Step([], [])
        self.arrivals += 1
        if self.expected is None:
            self.expected = self.floor = value
        if value < self.floor:  # from before the first value seen (unknown start): late, never a duplicate
            if value + 1 <= self.floor - 1:  # the values between are unaccounted for, not missing
                self.holes.append([value + 1, self.floor - 1, 0])
            self.floor = value
            step.released.append(item)
            step.findings.append(Finding(OUT_OF_ORDER, value, value, self.expected, value, lateness=1))
        elif value == self.expected:
            if self.held:  # every held value is greater and arrived earlier
                step.findings.append(Finding(OUT_OF_ORDER, value, value, value, value, lateness=len(self.held)))
            step.released.append(item)
            self.expected += 1
            self._release_run(step)
        elif value > self.expected:
            if value in self.held:
                step.findings.append(Finding(DUPLICATE, value, value, self.expected, value))
            else:
                self.held[value] = (item, now_ns, self.arrivals)
        elif (alerted := self._fill_hole(value)) is not None:
            step.released.append(item)
            step.findings.append(Finding(HEALED if alerted else OUT_OF_ORDER, value, value, self.expected, value,
                                         lateness=None if alerted else 1))
        else:
            step.findings.append(Finding(DUPLICATE, value, value, self.expected, value))
        self._expire(step, now_ns)
        return step

    def tick(self, now_ns: int) -> Step[T]:
        """Close the window if it has run out (call it from a timer when no values arrive)."""
        step: Step[T] = Step([], [])
        self._expire(step, now_ns)
        return step

    def close(self) -> Step[T]:
        """The stream ended (session end, end of a replay): every open hole becomes a GAP."""
        step: Step[T] = Step([], [])
        while self.held:
            self._skip_to_first_held(step)
            self._release_run(step)
        return step

    @property
    def oldest_held_ns(self) -> int | None:
        return min((t for _, t, _ in self.held.values()), default=None)

    # ----- internals -----
    def _release_run(self, step: Step[T]) -> None:
        """Release the held values that are now next in line, reporting any that arrived late."""
        while self.expected in self.held:
            value = self.expected
            item, _, arrived = self.held.pop(value)
            overtaken_by = sum(1 for w, (_, _, a) in self.held.items() if w > value and a < arrived)
            if overtaken_by:
                step.findings.append(Finding(OUT_OF_ORDER, value, value, value, value, lateness=overtaken_by))
            step.released.append(item)
            self.expected += 1

    def _expire(self, step: Step[T], now_ns: int) -> None:
        while self.held:
            oldest = self.oldest_held_ns
            if len(self.held) <= self.window_items and (oldest is None or now_ns - oldest < self.window_ns):
                return
            self._skip_to_first_held(step)
            self._release_run(step)

    def _skip_to_first_held(self, step: Step[T]) -> None:
        first_held = min(self.held)
        step.findings.append(Finding(GAP, self.expected, first_held - 1, self.expected, first_held))
        self.holes.append([self.expected, first_held - 1, 1])
        del self.holes[:-self.max_holes]
        self.expected = first_held

    def _fill_hole(self, value: int) -> int | None:
        """Take ``value`` out of a hole; returns 1 if the hole was alerted (HEALED), 0 if it was only
        unaccounted for (values before an unknown start), None if ``value`` is in no hole."""
        for i, (first, last, alerted) in enumerate(self.holes):
            if first <= value <= last:
                pieces = [[first, value - 1, alerted]] if value > first else []
                pieces += [[value + 1, last, alerted]] if value < last else []
                self.holes[i:i + 1] = pieces
                return alerted
        return None

    # ----- state for Faust tables -----
    def snapshot(self, encode: Callable[[T], Any] = lambda item: item) -> dict[str, Any]:
        """JSON-able state; ``encode`` turns a held item into JSON-able data."""
        return {"expected": self.expected, "floor": self.floor, "holes": self.holes, "arrivals": self.arrivals,
                "held": [[v, encode(item), t, a] for v, (item, t, a) in sorted(self.held.items())]}

    @classmethod
    def restore(cls, state: dict[str, Any], decode: Callable[[Any], T] = lambda data: data,
                **kwargs: Any) -> "ContiguousTracker":
        tracker = cls(**kwargs)
        tracker.expected, tracker.floor = state.get("expected"), state.get("floor")
        tracker.holes = [list(h) for h in state.get("holes", [])]
        tracker.arrivals = state.get("arrivals", 0)
        tracker.held = {v: (decode(item), t, a) for v, item, t, a in state.get("held", [])}
        return tracker


class MonotonicTracker(Generic[T]):
    """A counter that must not go backwards.

    Duplicates are recognised by a fingerprint among the last ``recent_size`` items: the
    value itself when ``strict`` (a sequence that never repeats), or a content fingerprint the
    caller passes (event times may repeat legitimately; the same record twice is a DUPLICATE).
    """

    __slots__ = ("strict", "last", "recent", "recent_size", "_recent_set")

    def __init__(self, strict: bool = False, recent_size: int = 64) -> None:
        self.strict, self.recent_size = strict, recent_size
        self.last: int | None = None
        self.recent: list[int] = []            # oldest first, each once
        self._recent_set: set[int] = set()     # the same, for lookups

    def offer(self, value: int, item: T, now_ns: int = 0, fingerprint: int | None = None) -> Step[T]:
        key = fingerprint if fingerprint is not None else (value if self.strict else None)
        if key is not None and key in self._recent_set:
            return Step([], [Finding(DUPLICATE, value, value, self.last, value)])
        findings = []
        if self.last is not None and value < self.last:
            findings.append(Finding(OUT_OF_ORDER, value, value, self.last, value, lateness=self.last - value))
        else:
            self.last = value
        if key is not None:
            recent = self.recent
            recent.append(key)
            self._recent_set.add(key)
            if len(recent) > self.recent_size:
                for dropped in recent[:-self.recent_size]:
                    self._recent_set.discard(dropped)
                del recent[:-self.recent_size]
        return Step([item], findings)

    def snapshot(self) -> dict[str, Any]:
        return {"last": self.last, "recent": self.recent}

    @classmethod
    def restore(cls, state: dict[str, Any], **kwargs: Any) -> "MonotonicTracker":
        tracker = cls(**kwargs)
        tracker.last, tracker.recent = state.get("last"), list(state.get("recent", []))
        tracker._recent_set = set(tracker.recent)
        return tracker
