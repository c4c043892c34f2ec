"""The one exception a provider normalizer raises on bad input."""

from __future__ import annotations

# Values of DeadLetter.error_kind
ENVELOPE = "envelope"      # the raw record's headers are missing or bad
PARSE = "parse"            # the payload is not decodable (bad JSON / msgpack / socket.io text)
VALIDATION = "validation"  # decoded, but not a valid message, or its records fail their schema
INTERNAL = "internal"      # the normalizer itself failed (a bug): still a dead letter, never a crash
ERROR_KINDS = (ENVELOPE, PARSE, VALIDATION, INTERNAL)


class NormalizeError(Exception):
    """The frame cannot be normalized; the framework dead-letters it with ``reason``.

    ``kind`` is ``parse`` or ``validation`` (the default). Keep ``reason`` short and
    free of secrets: it is stored in the dead-letter record and counted in metrics.
    """

    def __init__(self, reason: str, kind: str = VALIDATION) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
