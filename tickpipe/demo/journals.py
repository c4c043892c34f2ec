"""The emulators' journals, read as they grow: injected faults by provider and kind.

A journal is JSON lines (:mod:`tickpipe.emulators.journal`); an emulator buffers it, so a
line may be cut in the middle: only complete lines are taken, the rest waits for the next
read. A line that does not parse is counted as ``bad_lines`` and skipped.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson


def fault_kind(line: dict) -> str | None:
    """The fault a journal line records (``drop``, ``reorder``, ..., ``disconnect``), or None."""
    if line.get("event") == "fault":
        return str(line.get("fault"))
    if line.get("event") == "disconnect" and line.get("reason") == "fault":
        return "disconnect"
    return None


def count_faults(lines) -> Counter:
    """Injected faults by kind; a disconnect journaled both as a fault and as an event counts once."""
    counts, disconnected = Counter(), set()
    for line in lines:
        kind = fault_kind(line)
        if kind == "disconnect":
            if line.get("conn") in disconnected:
                continue
            disconnected.add(line.get("conn"))
        if kind is not None:
            counts[kind] += 1
    return counts


class JournalTail:
    """Incremental reader of one journal file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lines: list[dict] = []
        self.bad_lines = 0
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict]:
        """The complete lines added since the last call (also appended to ``self.lines``)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except OSError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        new = []
        for raw in complete:
            if not raw.strip():
                continue
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.bad_lines += 1
                continue
            if isinstance(line, dict):
                new.append(line)
            else:
                self.bad_lines += 1
        self.lines += new
        return new

    def faults(self) -> Counter:
        return count_faults(self.lines)

    def upto(self, cutoff_ns: int) -> list[dict]:
        """The lines written at or before ``cutoff_ns`` (epoch ns)."""
        return [line for line in self.lines if isinstance(line.get("ts_ns"), int) and line["ts_ns"] <= cutoff_ns]
