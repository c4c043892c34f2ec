"""``tickpipe replay``: the processor's pipeline over a file of raw frames, without Kafka.

Every output is encoded exactly as the Faust app would produce it, then decoded again
with the shipped schemas, so a line shows what a consumer of the clean topic sees: the
record's Avro fields plus ``"type"`` (the Avro record name), prices and sizes as the
provider's decimal text, times as epoch nanoseconds, bytes as UTF-8 text (or
``{"base64": ...}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO

from tickpipe.avro import AvroReader, record_json_line
from tickpipe.processors.pipeline import FrameResult, Pipeline
from tickpipe.processors.rawfile import read_raw_file
from tickpipe.processors.records import ALERT_KIND, CONTROL_KIND, DEAD_LETTER_KIND


@dataclass
class ReplayCounts:
    frames: int = 0
    ticks: int = 0
    alerts: int = 0
    dead_letters: int = 0
    resyncs: int = 0
    by_type: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"frames": self.frames, "ticks": self.ticks, "alerts": self.alerts,
                "dead_letters": self.dead_letters, "resyncs": self.resyncs, "by_type": dict(sorted(self.by_type.items()))}


def replay(pipeline: Pipeline, source: IO[bytes], ticks: IO[bytes], alerts: IO[bytes] | None = None,
           dlq: IO[bytes] | None = None) -> ReplayCounts:
    """Run ``source`` (a raw file) through ``pipeline``; write JSON lines; return the counts."""
    reader = AvroReader(pipeline.encoder.schemas)
    counts = ReplayCounts()
    sinks = {ALERT_KIND: alerts or ticks, DEAD_LETTER_KIND: dlq or ticks}

    def emit(result: FrameResult) -> None:
        for out in result.outputs:
            if out.kind == CONTROL_KIND:  # a resync request: nothing to ask of a file
                counts.resyncs += 1
                continue
            record = reader.decode(out.value)
            sinks.get(out.kind, ticks).write(record_json_line(record))
            counts.by_type[record.name] = counts.by_type.get(record.name, 0) + 1
            if out.kind == ALERT_KIND:
                counts.alerts += 1
            elif out.kind == DEAD_LETTER_KIND:
                counts.dead_letters += 1
            else:
                counts.ticks += 1

    for key, value, headers in read_raw_file(source, pipeline.provider):
        counts.frames += 1
        emit(pipeline.handle(key, value, headers))
    emit(pipeline.finish())
    return counts
