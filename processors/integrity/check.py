"""The integrity stage plugged into the processing pipeline (``FrameCheck`` of ``processors/pipeline.py``).

For each frame the pipeline has normalized, :class:`IntegrityCheck` hands the frame and its
records to the :class:`~tickpipe.processors.integrity.stage.IntegrityStage` and replaces the
frame's records with what the stage releases now (records held back in a reorder window
come out later, with the frame that completes them, on a ``tick`` or at ``finish``), and
appends the stage's ``GapAlert`` records. A dead-lettered frame still counts at the
producer scope, with no records.

Optionally every connection's state is saved to a key-value store after each batch (the
Faust app passes a table): a restarted or rebalanced worker restores it before the next
frame of that connection, so redelivered frames are recognised as duplicates. A saved state
carries the output marks it vouches up to; restoring one hands them to the batch processor,
which finds the outputs delivered beyond them (``processors/redelivery.py``).
"""

from __future__ import annotations

import time
from typing import MutableMapping

import orjson

from tickpipe.processors.integrity.metrics import IntegrityMetrics
from tickpipe.processors.integrity.stage import Emission, IntegritySettings, IntegrityStage


class IntegrityCheck:
    def __init__(self, provider: str, settings: IntegritySettings = IntegritySettings(),
                 store: MutableMapping[bytes, bytes] | None = None) -> None:
        self.stage = IntegrityStage(provider, settings)
        self.store = store
        self.metrics = IntegrityMetrics(provider)
        self.metrics.observe([], self.stage.connections.values())   # a live view: summed when scraped
        self._dirty: set[str] = set()
        self.restored_marks: list[dict] = []
        self._stream_ns: int | None = None   # newest receive time processed, and when (wall clock)
        self._stream_wall = 0

    def check(self, result) -> None:
        raw = result.raw
        if raw is None:
            return
        if self.store is not None and raw.conn not in self.stage.connections:
            saved = self.store.get(raw.conn.encode())
            if saved:
                state = orjson.loads(saved)
                marks = state.pop("out_marks", None)
                if marks:
                    self.restored_marks.append(marks)
                self.stage.connection(raw.conn).restore(state)
        if self._stream_ns is None or raw.recv_ns > self._stream_ns:
            self._stream_ns, self._stream_wall = raw.recv_ns, time.time_ns()
        records = result.records if result.dead_letter is None else []
        emission = self.stage.on_frame(raw, records, result.marks)
        self._apply(result, emission, replace=True)
        self._dirty.add(raw.conn)

    def commit(self, marks: dict | None = None) -> None:
        """Save the state of every connection touched since the last commit (once per batch,
        after the batch's outputs were delivered and before its offsets are committed), with the
        output ``marks`` it vouches up to (``processors/redelivery.py``)."""
        if self.store is not None:
            for conn in self._dirty:
                state = self.stage.connection(conn).snapshot()
                if marks:
                    state["out_marks"] = marks
                self.store[conn.encode()] = orjson.dumps(state)
        self._dirty.clear()

    def take_restored_marks(self) -> list[dict]:
        """The output marks of the states restored since the last call."""
        marks, self.restored_marks = self.restored_marks, []
        return marks

    def forget(self) -> None:
        """Partitions moved (a rebalance): drop what is in memory; the store has it."""
        if self.store is not None:
            self.stage.connections.clear()
            self._dirty.clear()

    def tick(self, result, now_ns: int | None = None) -> None:
        """Windows close and silence counts in stream time: the newest receive time processed plus
        the wall time since. A processor catching up on a backlog then closes no window early."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        if self._stream_ns is not None:
            now_ns = min(now_ns, self._stream_ns + (time.time_ns() - self._stream_wall))
        self._apply(result, self.stage.tick(now_ns))

    def finish(self, result) -> None:
        self._apply(result, self.stage.close())

    def _apply(self, result, emission: Emission, replace: bool = False) -> None:
        if replace:
            result.records = emission.records
        else:
            result.records.extend(emission.records)
        result.alerts.extend(emission.alerts)
        result.controls.extend(emission.resyncs)
        if emission.alerts:
            self.metrics.observe(emission.alerts, self.stage.connections.values())
