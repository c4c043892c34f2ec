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
        h: dict = {}
        extra: list | None = None
        for k, v in headers or ():
            h[k] = v
            if k not in _KNOWN:
                if extra is None:
                    extra = []
                extra.append((k, v))
        seq, recv_ns = h.get(H_SEQ), h.get(H_RECV_NS)
        try:  # the usual case: ASCII digits, int() reads the bytes as it would their text
            if type(seq) is not bytes or type(recv_ns) is not bytes:
                raise ValueError
            seq, recv_ns = int(seq), int(recv_ns)
        except ValueError:
            seq, recv_ns = _numbers(h)
        if not (_LONG_MIN <= seq <= _LONG_MAX and _LONG_MIN <= recv_ns <= _LONG_MAX):  # Avro longs downstream
            raise ValueError(f"raw record has a {H_SEQ} or {H_RECV_NS} header out of the 64-bit range")
        kind = h.get(H_KIND)
        record = _new(cls)
        record.__dict__.update(  # as the frozen dataclass's __init__ would set them, in one call
            provider=_text(h, H_PROVIDER), conn=_text(h, H_CONN), session=_text(h, H_SESSION), seq=seq,
            recv_ns=recv_ns, payload=value or b"", content_type=_text(h, H_CONTENT_TYPE),
            kind=KIND_FRAME if kind is None else (type(kind) is bytes and _KINDS.get(kind)) or kind.decode(),
            # a null tp-kind header: absent
            extra_headers=tuple(extra) if extra is not None else ())
        return record


_KNOWN = frozenset({H_PROVIDER, H_CONN, H_SESSION, H_SEQ, H_RECV_NS, H_CONTENT_TYPE, H_KIND})
_new = object.__new__
_DECODED: dict[bytes, str] = {}   # header texts repeat (provider, connection, session, content type)


_KINDS = {kind.encode(): kind for kind in (KIND_FRAME, *MARKER_KINDS)}


def _text(h: dict, name: str) -> str:
    """A header's text (undecodable bytes replaced), remembered for ``bytes`` values."""
    value = h.get(name)
    if value is None:
        raise ValueError(f"raw record lacks header {name}")
    if type(value) is not bytes:
        return value.decode("utf-8", "replace")
    text = _DECODED.get(value)
    if text is None:
        text = value.decode("utf-8", "replace")
        if len(_DECODED) >= 1024:
            _DECODED.clear()
        _DECODED[value] = text
    return text


def _numbers(h: dict) -> tuple[int, int]:
    """``tp-seq`` and ``tp-recv-ns`` read from their text (anything but plain ASCII digits)."""
    try:
        return int(_text(h, H_SEQ)), int(_text(h, H_RECV_NS))
    except ValueError as exc:
        if "lacks header" in str(exc):
            raise
        raise ValueError(f"raw record has a non-numeric {H_SEQ} or {H_RECV_NS} header") from None


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
