"""The ground-truth journal: JSON lines of what an emulator sent and which faults it injected.

Every line has ``ts_ns``, ``event`` and ``conn`` (the emulator's connection number, from 1):

    {"ts_ns": 1700000000000000000, "event": "connect", "conn": 1, "path": "/v2/iex"}
    {"ts_ns": ..., "event": "sent", "conn": 1, "ids": {"kind": "trade", "instrument": "AAPL", "trade_id": 42}}
    {"ts_ns": ..., "event": "fault", "conn": 1, "fault": "drop", "ids": [{"kind": "trade", ...}]}
    {"ts_ns": ..., "event": "disconnect", "conn": 1, "reason": "fault", "code": 1006}

``ids`` holds the identities of one message at every scope it can be checked at (the
provider's connection sequence, per-instrument sequence, trade id, event time). Tests
and the demo score detection by comparing alerts with the ``fault`` lines.
"""

from __future__ import annotations

import time
from typing import Any, IO

import orjson


class Journal:
    """Append-only JSON-lines writer; ``Journal(None)`` records nothing but still counts.

    Written in blocks, and at least every ``FLUSH_EVERY_NS`` so a reader following the
    file (the demo's live view) lags by about a second at most.
    """

    FLUSH_EVERY_NS = 1_000_000_000

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fh: IO[bytes] | None = open(path, "ab", buffering=1 << 16) if path else None
        self.counts: dict[str, int] = {}
        self._flushed_ns = time.time_ns()

    def write(self, event: str, conn: int | None = None, **fields: Any) -> None:
        key = event if event != "fault" else f"fault:{fields.get('fault')}"
        self.counts[key] = self.counts.get(key, 0) + 1
        if self._fh is None:
            return
        now = time.time_ns()
        doc = {"ts_ns": now, "event": event, "conn": conn, **fields}
        self._fh.write(orjson.dumps(doc, default=str) + b"\n")
        if now - self._flushed_ns >= self.FLUSH_EVERY_NS:
            self._fh.flush()
            self._flushed_ns = now

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_journal(path: str) -> list[dict]:
    with open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]
