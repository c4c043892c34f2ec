"""The integrity stage: every frame of a provider passes here between normalization and produce.

Per producer connection (``tp-conn``) it keeps, in this order:

1. **producer** scope — our ``tp-seq`` frame counter: a hole is frames lost between producer
   and Kafka (GAP); a repeat is an at-least-once redelivery (DUPLICATE: the frame's records
   are dropped, so the clean topics hold each message once);
2. **connection** scope — the provider's per-connection counter (policy), frames held in a
   reorder window; RESET when a new session starts, with the span that had no coverage;
3. **instrument** scope — per-instrument sequences, trade ids and event times (policy),
   records held in reorder windows where the counter is contiguous.

``on_frame``/``on_marker``/``tick``/``close`` return an :class:`Emission`: the records now
due, in order, and the ``GapAlert`` records to publish. STALE is checked in ``tick``.
The whole state of one connection snapshots to JSON (a Faust table value).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import orjson

from tickpipe.config import setting
from tickpipe.envelope import KIND_LOSS, KIND_SESSION_END, KIND_SESSION_START, RawRecord
from tickpipe.processors.integrity.policy import Policy, policy_for
from tickpipe.processors.integrity.trackers import (
    RESET, STALE, ContiguousTracker, Finding, MonotonicTracker, Step)
from tickpipe.processors.records import ALERT_KIND, SCOPE_CONNECTION, SCOPE_INSTRUMENT, Record

MARK_KIND = "sequence_mark"
OUTAGE_GAP = "across a reconnect: sent while the connection was down"
ORIGIN_FIELDS = ("recv_time", "conn", "session", "frame_seq", "frame_index")


@dataclass(frozen=True)
class IntegritySettings:
    """Section ``integrity``."""

    reorder_window_items: int = setting(1000, minimum=0, help="records/frames a reorder window may hold")
    reorder_window_ms: int = setting(500, minimum=0, help="how long a reorder window waits for a late record")
    stale_after_s: float = setting(30.0, minimum=0, help="a connection silent this long while up is STALE (0 = off)")
    instrument_stale_after_s: float = setting(0.0, minimum=0, help="the same per instrument (0 = off)")


@dataclass(slots=True)
class Emission:
    records: list[Record] = field(default_factory=list)
    alerts: list[Record] = field(default_factory=list)
    resyncs: list[dict] = field(default_factory=list)   # control.<provider> requests (see producers/control.py)

    def extend(self, other: "Emission") -> None:
        self.records += other.records
        self.alerts += other.alerts
        self.resyncs += other.resyncs


@dataclass(slots=True)
class FrameItem:
    """A frame on its way through the frame-level trackers."""

    seq: int
    session: str
    recv_ns: int
    records: list[Record]
    conn_counter: int | None = None


class ConnectionIntegrity:
    """All trackers of one producer connection."""

    def __init__(self, provider: str, conn: str, policy: Policy, settings: IntegritySettings) -> None:
        self.provider, self.conn, self.policy, self.settings = provider, conn, policy, settings
        window_ns = settings.reorder_window_ms * 1_000_000
        self._contiguous = lambda: ContiguousTracker(settings.reorder_window_items, window_ns)
        self.producer: ContiguousTracker = ContiguousTracker(window_items=0, window_ns=0)
        self.connection: ContiguousTracker = self._contiguous()
        self.records: dict[str, Any] = {}       # "stage|channel|symbol" -> tracker
        self.session: str | None = None
        self.session_up = False
        self.last_recv_ns: int | None = None
        self.stale_reported = False
        self.instrument_seen: dict[str, int] = {}
        self.outage_gaps: dict[str, int] = {}    # counter key -> first value missed across the last reconnect
        self.books: dict[str, str] = {}          # provider symbol -> channel of the books this connection carries

    # ----- entry points -----
    def on_raw(self, raw: RawRecord, records: list[Record], conn_counter: int | None) -> Emission:
        out = Emission()
        item = FrameItem(raw.seq, raw.session, raw.recv_ns, records, conn_counter)
        step = self.producer.offer(raw.seq, item, raw.recv_ns)
        if step.findings:
            self._alerts(out, step.findings, "producer", "tp_seq", raw, None)
        kind = raw.kind
        for frame in step.released:
            if kind == KIND_SESSION_START:
                self._session_start(out, raw)
            elif kind == KIND_SESSION_END:
                self._session_end(out, raw)
            elif kind == KIND_LOSS:
                self.last_recv_ns = raw.recv_ns
            else:
                self._frame(out, frame, raw)
        return out

    def tick(self, now_ns: int) -> Emission:
        out = Emission()
        self._connection_step(out, self.connection.tick(now_ns), None)
        for key, tracker in list(self.records.items()):
            if isinstance(tracker, ContiguousTracker):
                self._record_step(out, key, tracker.tick(now_ns), None)
        self._staleness(out, now_ns)
        return out

    def close(self) -> Emission:
        out = Emission()
        self._connection_step(out, self.connection.close(), None)
        for key, tracker in list(self.records.items()):
            if isinstance(tracker, ContiguousTracker):
                self._record_step(out, key, tracker.close(), None)
        return out

    # ----- state for a Faust table -----
    def snapshot(self) -> dict[str, Any]:
        records = {}
        for key, tracker in self.records.items():
            if isinstance(tracker, ContiguousTracker):
                records[key] = {"c": tracker.snapshot(_record_to_json)}
            else:
                records[key] = {"m": tracker.snapshot(), "strict": tracker.strict}
        return {"producer": self.producer.snapshot(), "connection": self.connection.snapshot(_frame_to_json),
                "records": records, "session": self.session, "session_up": self.session_up,
                "last_recv_ns": self.last_recv_ns, "stale_reported": self.stale_reported,
                "instrument_seen": self.instrument_seen, "books": self.books, "outage_gaps": self.outage_gaps}

    def restore(self, state: dict[str, Any]) -> "ConnectionIntegrity":
        window = dict(window_items=self.settings.reorder_window_items, window_ns=self.settings.reorder_window_ms * 1_000_000)
        self.producer = ContiguousTracker.restore(state["producer"], window_items=0, window_ns=0)
        self.connection = ContiguousTracker.restore(state["connection"], _frame_from_json, **window)
        self.records = {}
        for key, data in state["records"].items():
            self.records[key] = (ContiguousTracker.restore(data["c"], _record_from_json, **window) if "c" in data
                                 else MonotonicTracker.restore(data["m"], strict=data["strict"]))
        self.session, self.session_up = state["session"], state["session_up"]
        self.last_recv_ns, self.stale_reported = state["last_recv_ns"], state["stale_reported"]
        self.instrument_seen = dict(state["instrument_seen"])
        self.books = dict(state.get("books", {}))
        self.outage_gaps = dict(state.get("outage_gaps", {}))
        return self

    # ----- sessions -----
    def _session_start(self, out: Emission, raw: RawRecord) -> None:
        if self.session is not None and self.session != raw.session:
            out.extend(self.close())
            counter = self.policy.connection_counter or "session"
            out.alerts.append(self._alert(RESET, "connection", counter, None, raw, None,
                                          span=(self.last_recv_ns, raw.recv_ns),
                                          detail=f"new session {raw.session} after {self.session}"))
            if not self.policy.counters_survive_reconnect:
                self.records.clear()
            else:  # the next hole in these counters spans the outage: messages sent while we were away
                self.outage_gaps = {key: t.expected for key, t in self.records.items()
                                    if isinstance(t, ContiguousTracker) and t.expected is not None}
        window_ns = self.settings.reorder_window_ms * 1_000_000
        self.connection = ContiguousTracker(self.settings.reorder_window_items, window_ns,
                                            start=self.policy.connection_counter_start)
        self.session, self.session_up, self.stale_reported = raw.session, True, False
        self.last_recv_ns = raw.recv_ns

    def _session_end(self, out: Emission, raw: RawRecord) -> None:
        out.extend(self.close())
        self.session_up = False
        self.last_recv_ns = raw.recv_ns

    # ----- frames and records -----
    def _frame(self, out: Emission, frame: FrameItem, raw: RawRecord) -> None:
        if self.session is None:
            self.session, self.session_up = frame.session, True
        self.last_recv_ns, self.stale_reported = frame.recv_ns, False
        if frame.conn_counter is None or not self.policy.connection_counter:
            for record in frame.records:
                self._pass(out, record, raw, 0)
            return
        self._connection_step(out, self.connection.offer(frame.conn_counter, frame, frame.recv_ns), raw)

    def _connection_step(self, out: Emission, step: Step, raw: RawRecord | None) -> None:
        self._alerts(out, step.findings, "connection", self.policy.connection_counter or "sequence", raw, None)
        for frame in step.released:
            self._records(out, frame.records, raw)

    def _records(self, out: Emission, records: Iterable[Record], raw: RawRecord | None, start: int = 0) -> None:
        for record in records:
            self._pass(out, record, raw, start)

    def _pass(self, out: Emission, record: Record, raw: RawRecord | None, start: int,
              checks: list | None = None) -> None:
        """Send one record through the record-level checks from check number ``start`` on
        (``checks``: the record's own, when already known)."""
        if checks is None:
            checks = self._checks_for(record)
        while start < len(checks):
            key, value, make, fingerprint = checks[start]
            tracker = self.records.get(key)
            if tracker is None:
                tracker = self.records[key] = make()
            if type(tracker) is MonotonicTracker:
                step = tracker.offer(value, record, record.get("recv_time") or 0, fingerprint)
            else:
                step = tracker.offer(value, record, record.get("recv_time") or 0)
            start += 1
            released = step.released
            if step.findings or len(released) != 1 or released[0] is not record:
                self._record_step(out, key, step, raw, next_check=start, current=record, checks=checks)
                return
            # the usual case, what _record_step would do: on to the record's next check
        symbol = record.get("symbol")
        if symbol:
            self.instrument_seen[symbol] = record.get("recv_time") or 0
        kind = record.kind
        if kind == "book" and record.get("provider_symbol"):
            self.books[record["provider_symbol"]] = record.get("channel") or ""
        if kind != MARK_KIND:   # an instrument-scope sequence mark is checked, never emitted
            out.records.append(record)

    def _record_step(self, out: Emission, key: str, step: Step, raw: RawRecord | None,
                     next_check: int | None = None, current: Record | None = None, checks: list | None = None) -> None:
        findings = step.findings
        if findings:
            stage, _kind, channel, _symbol = key.split("|", 3)
            sample = current or (step.released[0] if step.released else None)
            self._alerts(out, findings, "instrument", stage, raw, sample, channel=channel or None)
            if key in self.outage_gaps:
                self._mark_outage_gap(out, key, findings)
        for record in step.released:
            if next_check is None:
                self._pass(out, record, raw, self._index_after(record, key))
            else:
                self._pass(out, record, raw, next_check, checks if record is current else None)

    def _mark_outage_gap(self, out: Emission, key: str, findings: list[Finding]) -> None:
        """A counter that survives reconnects skipped the values sent while we were disconnected:
        still a GAP (data we never got), labelled so it is not taken for loss on a live connection."""
        start = self.outage_gaps[key]
        for finding, alert in zip(findings, out.alerts[-len(findings):]):
            if finding.kind == "gap" and finding.first == start:
                alert["detail"] = OUTAGE_GAP
                del self.outage_gaps[key]
                return

    def _index_after(self, record: Record, key: str) -> int:
        return [c[0] for c in self._checks_for(record)].index(key) + 1

    def _checks_for(self, record: Record) -> list[tuple[str, int, Callable[[], Any], int | None]]:
        policy, get = self.policy, record.get
        channel, symbol = get("channel") or "", get("provider_symbol") or ""
        checks = []
        seq = get("sequence")
        if seq is not None:
            scope = get("sequence_scope")
            if scope and scope != SCOPE_CONNECTION:
                sparse = channel in policy.sparse_channels
                counter = "seq" if scope == "key" else "sequence"
                checks.append((f"{counter}||{channel}|{symbol}", seq,
                               _strict_monotonic if sparse else self._contiguous, None))
        if policy.trade_ids and record.kind == "trade":
            trade_id = get("trade_id")
            trade_id = _counter(int(trade_id)) if trade_id and str(trade_id).isascii() and str(trade_id).isdigit() else None
            if trade_id is not None and get("action", "new") == "new":  # corrections/cancels are not in the id sequence
                checks.append((f"trade_id||{channel}|{symbol}", trade_id,
                               self._contiguous if policy.trade_ids == "contiguous" else _strict_monotonic, None))
        if policy.event_time and not checks:
            event_time = get("event_time")
            if event_time is not None and record.kind not in policy.no_event_time_kinds:
                checks.append((f"event_time|{record.kind}|{channel}|{symbol}", event_time,
                               MonotonicTracker, _fingerprint(record)))
        return checks

    # ----- book resyncs -----
    def plan_resyncs(self, out: Emission) -> Emission:
        """A gap can leave a level-2 book wrong for good (later deltas don't repair it): ask the
        producer to resubscribe the books it may have hit, so the provider sends a fresh snapshot.
        A producer or connection gap may have hit any book of the connection; an instrument gap
        only that instrument's."""
        if not out.alerts:
            return out
        wanted: dict[str, str] = {}
        for alert in out.alerts:
            if alert["kind"] != "GAP":
                continue
            if alert["scope"] in ("producer", "connection"):
                wanted.update(self.books)
            elif alert.get("provider_symbol") in self.books:
                wanted[alert["provider_symbol"]] = self.books[alert["provider_symbol"]]
        for symbol, channel in sorted(wanted.items()):
            out.resyncs.append({"action": "resync", "instrument": symbol, "channel": channel or None,
                                "reason": "sequence gap", "requested_ns": self.last_recv_ns, "conn": self.conn})
        return out

    # ----- staleness -----
    def _staleness(self, out: Emission, now_ns: int) -> None:
        limit = self.settings.stale_after_s
        if limit and self.session_up and self.last_recv_ns and not self.stale_reported \
                and now_ns - self.last_recv_ns >= limit * 1e9:
            self.stale_reported = True
            out.alerts.append(self._alert(STALE, "connection", "activity", None, None, None,
                                          span=(self.last_recv_ns, now_ns), detected=now_ns,
                                          detail=f"no frame for {(now_ns - self.last_recv_ns) / 1e9:.1f}s"))
        ilimit = self.settings.instrument_stale_after_s
        if ilimit and self.session_up:
            for symbol, seen in list(self.instrument_seen.items()):
                if now_ns - seen >= ilimit * 1e9:
                    del self.instrument_seen[symbol]
                    alert = self._alert(STALE, "instrument", "activity", None, None, None,
                                        span=(seen, now_ns), detected=now_ns, detail="instrument silent")
                    alert["instrument"] = symbol
                    out.alerts.append(alert)

    # ----- alerts -----
    def _alerts(self, out: Emission, findings: list[Finding], scope: str, counter: str,
                raw: RawRecord | None, record: Record | None, channel: str | None = None) -> None:
        for finding in findings:
            out.alerts.append(self._alert(finding.kind, scope, counter, finding, raw, record, channel=channel))

    def _alert(self, kind: str, scope: str, counter: str, finding: Finding | None, raw: RawRecord | None,
               record: Record | None, channel: str | None = None, span: tuple | None = None,
               detected: int | None = None, detail: str | None = None) -> Record:
        alert = Record(ALERT_KIND, {
            "kind": kind.upper(), "provider": self.provider, "scope": scope, "counter": counter,
            "channel": channel, "conn": self.conn,
            "session": raw.session if raw else (self.session or ""),
            "frame_seq": raw.seq if raw else None,
            "detected_time": detected or (raw.recv_ns if raw else (self.last_recv_ns or 0)),
            "detail": detail,
        })
        if record is not None and scope == "instrument":
            alert["instrument"], alert["provider_symbol"] = record.get("symbol"), record.get("provider_symbol")
            alert["event_time"] = record.get("event_time")
        if finding is not None:
            alert.update(first_missing=finding.first, last_missing=finding.last, missing_count=finding.count,
                         expected=finding.expected, observed=finding.observed, lateness=finding.lateness)
        if span is not None:
            alert["span_start"], alert["span_end"] = span
        return alert


def _counter(value: Any) -> int | None:
    """A counter value the checks can track, or None: alerts and saved state hold it (and the
    numbers next to it) as 64-bit integers, so a feed's 10**30 is no counter."""
    return value if type(value) is int and -(2**62) <= value < 2**62 else None


def _mark_record(mark: Any, raw: RawRecord) -> Record:
    """A sequence mark of scope instrument (an Exchange order event) as a record only the checks see."""
    return Record(MARK_KIND, {"symbol": mark.key, "provider_symbol": mark.key, "channel": mark.channel,
                              "sequence": mark.value, "sequence_scope": mark.scope, "recv_time": raw.recv_ns})


def _strict_monotonic() -> MonotonicTracker:
    return MonotonicTracker(strict=True)


def _record_to_json(record: Record) -> list:
    return [record.kind, dict(record)]


def _record_from_json(data: list) -> Record:
    return Record(data[0], data[1])


def _frame_to_json(frame: FrameItem) -> list:
    return [frame.seq, frame.session, frame.recv_ns, [_record_to_json(r) for r in frame.records], frame.conn_counter]


def _frame_from_json(data: list) -> FrameItem:
    return FrameItem(data[0], data[1], data[2], [_record_from_json(r) for r in data[3]], data[4])


def _fingerprint(record: Record) -> int:
    """Identity of a record's content, origin excluded: the same message received twice matches."""
    body = record.copy()
    try:  # every normalized record has them all
        del body["recv_time"], body["conn"], body["session"], body["frame_seq"], body["frame_index"]
    except KeyError:
        for name in ORIGIN_FIELDS:
            body.pop(name, None)
    return zlib.crc32(_dumps(body, option=_SORTED, default=str))


_dumps, _SORTED = orjson.dumps, orjson.OPT_SORT_KEYS


class IntegrityStage:
    """The integrity checks of one provider, across its connections."""

    def __init__(self, provider: str, settings: IntegritySettings = IntegritySettings(), policy: Policy | None = None) -> None:
        self.provider, self.settings = provider, settings
        self.policy = policy or policy_for(provider)
        self.connections: dict[str, ConnectionIntegrity] = {}

    def connection(self, conn: str) -> ConnectionIntegrity:
        state = self.connections.get(conn)
        if state is None:
            state = self.connections[conn] = ConnectionIntegrity(self.provider, conn, self.policy, self.settings)
        return state

    def on_frame(self, raw: RawRecord, records: list[Record], marks: Iterable[Any] = ()) -> Emission:
        """A frame or marker and what normalization made of it (records, sequence marks)."""
        counter = None
        if self.policy.connection_counter:
            for mark in marks:
                if getattr(mark, "scope", None) == SCOPE_CONNECTION:
                    counter = _counter(mark.value)
                    break
            if counter is None:
                counter = next((r.get("sequence") for r in records
                                if r.get("sequence_scope") == SCOPE_CONNECTION and r.get("sequence") is not None), None)
        placeholders = [_mark_record(m, raw) for m in marks
                        if getattr(m, "scope", None) == SCOPE_INSTRUMENT and _counter(m.value) is not None] if marks else None
        state = self.connections.get(raw.conn) or self.connection(raw.conn)
        out = state.on_raw(raw, list(records) + placeholders if placeholders else records, counter)
        return state.plan_resyncs(out) if out.alerts else out

    def tick(self, now_ns: int) -> Emission:
        out = Emission()
        for state in self.connections.values():
            out.extend(state.plan_resyncs(state.tick(now_ns)))
        return out

    def close(self) -> Emission:
        out = Emission()
        for state in self.connections.values():
            out.extend(state.plan_resyncs(state.close()))
        return out
