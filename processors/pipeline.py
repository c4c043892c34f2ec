"""One raw record in, what to produce out: the processing path shared by the Faust app and replay.

    envelope -> normalize (provider normalizer) -> checks (integrity stage) -> encode -> outputs

* a raw record whose headers are bad, whose payload does not parse, whose normalizer
  rejects it or whose records do not fit their schema becomes one ``DeadLetter`` output;
* session markers (``tp-kind`` session_start/session_end/loss) produce no records; they
  reset the normalizer state of their connection and are shown to the checks;
* **the integrity seam**: every ``FrameCheck`` in ``checks`` sees each frame's
  :class:`FrameResult` — after normalization and schema validation (each record's Avro
  bytes are in ``record.encoded``), before produce; markers and dead-lettered frames too
  (``result.is_marker``, ``result.dead_letter``). A check may append ``GapAlert`` records
  to ``result.alerts`` and replace ``result.records`` (drop duplicates, hold records back
  and release them with a later frame); the outputs are built from what it leaves.
  Optional ``tick(result, now_ns)`` (called periodically by the app) and ``finish(result)``
  (end of a replay) get a result without a frame (``raw`` None) to release or alert into.

Nothing here touches Kafka: outputs are (kind, key, value bytes, headers) for the caller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Protocol

import orjson

from tickpipe.avro import AvroEncoder
from tickpipe.envelope import KIND_SESSION_END, KIND_SESSION_START, MARKER_KINDS, RawRecord
from tickpipe.logs import get_logger
from tickpipe.processors.deadletter import Source, dead_letter, kafka_headers
from tickpipe.processors.metrics import ProviderMetrics
from tickpipe.processors.normalizers import load_normalizer
from tickpipe.processors.normalizers.base import Frame, Normalizer, NormalizerState, SequenceMark
from tickpipe.processors.normalizers.errors import ENVELOPE, INTERNAL, VALIDATION, NormalizeError
from tickpipe.processors.records import ALERT_KIND, CONTROL_KIND, DEAD_LETTER_KIND, Record

log = get_logger("tickpipe.processors")

# Exceptions from a normalizer that mean "the input was not what the protocol says".
MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError)


@dataclass(slots=True)
class Output:
    """One Kafka record to produce: ``kind`` picks the topic (tick kind, gap_alert, dead_letter)."""

    kind: str
    key: bytes
    value: bytes
    record: Record
    headers: list[tuple[str, bytes]] | None = None


@dataclass(slots=True)
class FrameResult:
    raw: RawRecord | None
    records: list[Record] = field(default_factory=list)
    marks: list[SequenceMark] = field(default_factory=list)
    alerts: list[Record] = field(default_factory=list)
    controls: list[dict] = field(default_factory=list)   # resync requests for the producers
    dead_letter: Record | None = None
    outputs: list[Output] = field(default_factory=list)

    @property
    def is_marker(self) -> bool:
        return self.raw is not None and self.raw.kind in MARKER_KINDS


class FrameCheck(Protocol):
    """The integrity stage's interface (see the module docstring)."""

    def check(self, result: FrameResult) -> None: ...


class Pipeline:
    """Normalize, check and encode the raw records of one provider."""

    def __init__(self, provider: str, normalizer: Normalizer, encoder: AvroEncoder | None = None,
                 state: NormalizerState | None = None, checks: Iterable[FrameCheck] = ()) -> None:
        self.provider = provider
        self.normalizer = normalizer
        self.encoder = encoder or AvroEncoder()
        self.state = state if state is not None else NormalizerState()
        self.checks = list(checks)
        self.metrics = ProviderMetrics(provider)
        self._frames_with_records, self._frames_empty = self.metrics.frames["records"], self.metrics.frames["empty"]
        self._log_gate = LogGate(per_second=5)
        self._bug_log_gate = LogGate(per_second=1)  # tracebacks of normalizer bugs

    @classmethod
    def for_provider(cls, provider: str, overrides: dict[str, str] | None = None, **kwargs) -> "Pipeline":
        return cls(provider, load_normalizer(provider, overrides), **kwargs)

    def handle(self, key: bytes | None, value: bytes | None, headers, source: Source = Source()) -> FrameResult:
        """One consumed raw record, as Kafka gives it."""
        try:
            raw = RawRecord.from_kafka(key, value, headers)
        except Exception as exc:  # any header that does not decode is an envelope problem
            reason = str(exc) if isinstance(exc, ValueError) else f"bad envelope headers: {type(exc).__name__}"
            return self._dead(None, ENVELOPE, reason, key, value, headers, source)
        if raw.provider != self.provider:
            return self._dead(None, ENVELOPE, f"tp-provider is {raw.provider!r} on the {self.provider} topic",
                              key, value, headers, source)
        return self.handle_raw(raw, source, key=key, headers=headers)

    def handle_raw(self, raw: RawRecord, source: Source = Source(), *, key: bytes | None = None,
                   headers=None) -> FrameResult:
        """One raw record already decoded (replay, tests)."""
        if raw.kind in MARKER_KINDS:
            return self._marker(raw)
        frame = Frame(raw, self.state)
        try:
            self.normalizer(frame)
        except NormalizeError as exc:
            return self._dead(raw, exc.kind, exc.reason, key, None, headers, source)
        except MALFORMED as exc:
            return self._dead(raw, VALIDATION, _describe(exc), key, None, headers, source)
        except Exception as exc:  # a normalizer bug must not stop the stream
            if self._bug_log_gate.allow():
                log.exception("normalizer failed", provider=self.provider, conn=raw.conn, frame_seq=raw.seq)
            return self._dead(raw, INTERNAL, _describe(exc), key, None, headers, source)
        if frame.ignored:
            for reason in frame.ignored:
                self.metrics.ignored(reason).inc()
        records = frame.records
        encode = self.encoder.encode
        try:
            for rec in records:
                rec.encoded = encode(rec.kind, rec)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return self._dead(raw, VALIDATION, f"{rec.name} does not fit its schema: {exc}", key, None, headers, source)
        result = FrameResult(raw, records, frame.marks)
        self._run_checks("check", result)
        self._emit(result)
        if result.records:
            self._frames_with_records.inc()
            counter = self.metrics.records
            for rec in result.records:
                counter(rec.kind).inc()
        else:
            self._frames_empty.inc()
        return result

    def tick(self, now_ns: int) -> FrameResult:
        """Time passes (the Faust app calls this every ``tick_interval_s``): checks with a
        ``tick(result, now_ns)`` method may release held records and report staleness."""
        return self._without_frame("tick", now_ns)

    def finish(self) -> FrameResult:
        """End of input (the end of a replay file): checks with a ``finish(result)`` method
        release what they still hold."""
        return self._without_frame("finish")

    def _without_frame(self, hook: str, *args) -> FrameResult:
        result = FrameResult(None)
        self._run_checks(hook, result, *args)
        self._emit(result)
        return result

    def _run_checks(self, hook: str, result: FrameResult, *args) -> None:
        """Run one hook of every check; a failing check is logged and counted, and the
        frame's records still go out (unchecked rather than lost)."""
        for check in self.checks:
            method = getattr(check, hook, None)
            if method is None:
                continue
            try:
                method(result, *args)
            except Exception:
                self.metrics.check_errors.inc()
                log.exception("integrity check failed", provider=self.provider, hook=hook,
                              check=type(check).__name__, frame_seq=result.raw.seq if result.raw else None)

    def _marker(self, raw: RawRecord) -> FrameResult:
        if raw.kind in (KIND_SESSION_START, KIND_SESSION_END):
            self.state.drop_connection(raw.conn)
        result = FrameResult(raw)
        self._run_checks("check", result)
        self._emit(result)
        self.metrics.frames["marker"].inc()
        return result

    def _emit(self, result: FrameResult) -> None:
        """Outputs for the records and alerts the checks left in ``result``."""
        encode, outputs = self.encoder.encode, result.outputs
        for rec in result.records:
            value = rec.encoded if rec.encoded is not None else encode(rec.kind, rec)
            outputs.append(Output(rec.kind, rec["symbol"].encode(), value, rec))
        for alert in result.alerts:
            try:
                value = self.encoder.encode(ALERT_KIND, alert)
            except (ValueError, TypeError, KeyError, AttributeError):
                self.metrics.check_errors.inc()
                log.exception("gap alert does not fit its schema", provider=self.provider)
                continue
            result.outputs.append(Output(ALERT_KIND, alert["provider"].encode(), value, alert))
        for request in result.controls:
            result.outputs.append(Output(CONTROL_KIND, self.provider.encode(), orjson.dumps(request),
                                         Record(CONTROL_KIND, request)))

    def _dead(self, raw: RawRecord | None, error_kind: str, reason: str, key, value, headers,
              source: Source) -> FrameResult:
        if raw is not None:
            key = raw.key if key is None else key
            value = raw.payload
            headers = raw.headers() if headers is None else headers
        record = dead_letter(self.provider, error_kind, reason, key, value, headers, source)
        self.metrics.dead_letter(error_kind).inc()
        self.metrics.frames["dead_letter"].inc()
        if self._log_gate.allow():
            log.warning("raw record dead-lettered", provider=self.provider, error_kind=error_kind,
                        reason=record["reason"], conn=record["conn"], frame_seq=record["frame_seq"],
                        not_logged_before=self._log_gate.take_suppressed())
        result = FrameResult(raw, dead_letter=record)
        if raw is not None:  # the integrity stage still counts the frame
            self._run_checks("check", result)
        out_key = bytes(key) if key is not None else b""
        result.outputs.append(Output(DEAD_LETTER_KIND, out_key, self.encoder.encode(DEAD_LETTER_KIND, record),
                                     record, kafka_headers(record)))
        self._emit(result)
        return result


class LogGate:
    """At most ``per_second`` log lines per second; counts what it held back (the metric counts all)."""

    def __init__(self, per_second: int) -> None:
        self.per_second, self._window, self._count, self._suppressed = per_second, 0, 0, 0

    def allow(self) -> bool:
        now = int(time.monotonic())
        if now != self._window:
            self._window, self._count = now, 0
        self._count += 1
        if self._count > self.per_second:
            self._suppressed += 1
            return False
        return True

    def take_suppressed(self) -> int:
        n, self._suppressed = self._suppressed, 0
        return n


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}" if exc.args else "missing field"
    return f"{type(exc).__name__}: {exc}"
