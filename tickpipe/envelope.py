"""The raw-record envelope: how a producer writes a frame into ``raw.<provider>``.

* key: the connection id (UTF-8), so one connection's frames stay in order in one partition;
* value: the frame exactly as received (text frames UTF-8 encoded, binary frames as is);
  for marker records, a JSON object describing the event;
* headers (all values UTF-8 text):

| header | meaning |
| --- | --- |
| ``tp-provider`` | provider id |
| ``tp-conn`` | connection id: one per producer connection slot, stable across reconnects |
| ``tp-session`` | session id: new on every (re)connect |
| ``tp-seq`` | per-connection frame counter, from 1, never reset for a connection id (markers count too) |
| ``tp-recv-ns`` | receive time, Unix epoch nanoseconds |
| ``tp-content-type`` | ``application/json``, ``application/msgpack``, ``text/plain`` or ``application/x-socketio-event+json`` |
| ``tp-kind`` | ``frame``, ``session_start``, ``session_end`` or ``loss`` (a marker counting frames dropped before Kafka) |

Marker values are JSON objects (:func:`encode_marker` / :func:`decode_marker`), always with ``event`` (= the kind):

* ``session_start``: ``endpoint`` (no query string), ``attempt`` (1 = first connection of this process,
  whose ``tp-seq`` restarts at 1), ``previous_session``;
* ``session_end``: ``reason`` (``closed``, ``stale``, ``timeout``, ``error``, ``auth_failed``,
  ``token_refresh``, ``shutdown``), ``close_code`` and ``close_reason`` (when closed), ``error``
  (exception text, secrets masked), ``frames`` (frames of the session), ``duration_s``;
* ``loss``: ``dropped_frames``, ``dropped_bytes``, ``ranges`` (``[[first, last], ...]`` inclusive
  ``tp-seq`` ranges of the dropped records; they may lie before and after the marker's own
  ``tp-seq``), ``sessions`` (session ids they belonged to), ``first_recv_ns``, ``last_recv_ns``, ``reason``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

H_PROVIDER = "tp-provider"
H_CONN = "tp-conn"
H_SESSION = "tp-session"
H_SEQ = "tp-seq"
H_RECV_NS = "tp-recv-ns"
H_CONTENT_TYPE = "tp-content-type"
H_KIND = "tp-kind"

KIND_FRAME = "frame"
KIND_SESSION_START = "session_start"
KIND_SESSION_END = "session_end"
KIND_LOSS = "loss"
MARKER_KINDS = (KIND_SESSION_START, KIND_SESSION_END, KIND_LOSS)

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1

CT_JSON = "application/json"
CT_MSGPACK = "application/msgpack"
CT_TEXT = "text/plain"
CT_SOCKETIO = "application/x-socketio-event+json"


@dataclass(frozen=True)
class RawRecord:
    """One record of a raw topic, decoded from Kafka or built by a producer or a replay."""

    provider: str
    conn: str
    session: str
    seq: int
    recv_ns: int
    payload: bytes
    content_type: str = CT_JSON
    kind: str = KIND_FRAME
    extra_headers: tuple[tuple[str, bytes], ...] = field(default=())

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (H_PROVIDER, self.provider.encode()),
            (H_CONN, self.conn.encode()),
            (H_SESSION, self.session.encode()),
            (H_SEQ, str(self.seq).encode()),
            (H_RECV_NS, str(self.recv_ns).encode()),
            (H_CONTENT_TYPE, self.content_type.encode()),
            (H_KIND, self.kind.encode()),
            *self.extra_headers,
        ]

    @property
    def key(self) -> bytes:
        return self.conn.encode()

    @classmethod
    def from_kafka(cls, key: bytes | None, value: bytes | None, headers) -> "RawRecord":
        """Decode a consumed record; raises ``ValueError`` naming a missing or bad header."""
        h = {k: v for k, v in (headers or ())}
        known = {H_PROVIDER, H_CONN, H_SESSION, H_SEQ, H_RECV_NS, H_CONTENT_TYPE, H_KIND}

        def text(name: str) -> str:
            if name not in h or h[name] is None:
                raise ValueError(f"raw record lacks header {name}")
            return h[name].decode("utf-8", "replace")

        try:
            seq, recv_ns = int(text(H_SEQ)), int(text(H_RECV_NS))
        except ValueError as exc:
            if "lacks header" in str(exc):
                raise
            raise ValueError(f"raw record has a non-numeric {H_SEQ} or {H_RECV_NS} header") from None
        if not (_LONG_MIN <= seq <= _LONG_MAX and _LONG_MIN <= recv_ns <= _LONG_MAX):  # Avro longs downstream
            raise ValueError(f"raw record has a {H_SEQ} or {H_RECV_NS} header out of the 64-bit range")
        return cls(provider=text(H_PROVIDER), conn=text(H_CONN), session=text(H_SESSION), seq=seq,
                   recv_ns=recv_ns, payload=value or b"", content_type=text(H_CONTENT_TYPE),
                   kind=KIND_FRAME if h.get(H_KIND) is None else h[H_KIND].decode(),  # a null header: absent
                   extra_headers=tuple((k, v) for k, v in (headers or ()) if k not in known))


def encode_marker(kind: str, **fields) -> bytes:
    """The JSON value of a marker record (``event`` = ``kind``)."""
    import json
    return json.dumps({"event": kind, **fields}, separators=(",", ":"), default=str).encode()


def decode_marker(payload: bytes) -> dict:
    """Parse a marker value; raises ``ValueError`` if it is not a JSON object."""
    import json
    doc = json.loads(payload)
    if not isinstance(doc, dict):
        raise ValueError("marker value is not a JSON object")
    return doc
