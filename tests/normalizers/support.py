"""Shared by the normalizer tests: one connection's frames through the real pipeline."""

from __future__ import annotations

import json

from tickpipe.envelope import CT_JSON, RawRecord
from tickpipe.processors.pipeline import Pipeline

RECV = 1_700_000_000_000_000_000


class Feed:
    """Frames of connection ``c1``/session ``s1`` through ``Pipeline.for_provider`` (schema-validated),
    numbered like a producer."""

    def __init__(self, provider: str, content_type: str = CT_JSON) -> None:
        self.provider, self.pipe, self.seq = provider, Pipeline.for_provider(provider), 0
        self.content_type = content_type  # of frames not given one (binary frames: msgpack)

    def raw(self, frame, recv_ns: int = RECV, content_type: str | None = None) -> RawRecord:
        self.seq += 1
        content_type = content_type or self.content_type
        payload = frame if isinstance(frame, bytes) else (frame if isinstance(frame, str) else json.dumps(frame)).encode()
        return RawRecord(provider=self.provider, conn="c1", session="s1", seq=self.seq, recv_ns=recv_ns,
                         payload=payload, content_type=content_type)

    def __call__(self, frame, content_type: str | None = None):
        return self.pipe.handle_raw(self.raw(frame, content_type=content_type))

    def records(self, frame, content_type: str | None = None) -> list[dict]:
        result = self(frame, content_type)
        assert result.dead_letter is None, result.dead_letter and result.dead_letter["reason"]
        return [r.as_json() for r in result.records]

    def dead_letter(self, payload: bytes) -> str:
        """The DLQ reason of a frame that must be rejected (no records, original bytes kept)."""
        result = self(payload)
        assert result.records == [] and result.dead_letter is not None
        assert result.dead_letter["payload"] == payload
        return result.dead_letter["reason"]


def through_integrity(feed: Feed, frames: list, stage) -> tuple[set[str], list[dict]]:
    """Every frame through the pipeline and ``stage`` (the integrity stage), 1 ms apart so reorder
    windows expire; no frame may be dead-lettered. Returns the record kinds seen and the GAP alerts."""
    kinds: set[str] = set()
    gaps: list[dict] = []
    for i, frame in enumerate(frames):
        raw = feed.raw(frame, RECV + i * 1_000_000)
        result = feed.pipe.handle_raw(raw)
        assert result.dead_letter is None, result.dead_letter["reason"]
        kinds |= {r.kind for r in result.records}
        gaps += [a for a in stage.on_frame(raw, result.records, result.marks).alerts if a["kind"] == "GAP"]
    gaps += [a for a in stage.close().alerts if a["kind"] == "GAP"]
    return kinds, gaps
