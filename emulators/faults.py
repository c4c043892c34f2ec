"""Fault injection: a plan parsed from ``--faults SPEC`` and an :class:`Outbox` that applies it.

SPEC is a comma-separated list of ``name=value``::

    drop=0.01,reorder=0.01,duplicate=0.01,malformed=0.001,disconnect_every=30,stall_every=20,stall_for=3

| name | value | effect |
| --- | --- | --- |
| drop | probability | a data message is not sent (a gap) |
| reorder | probability | a data message is swapped with the next one (out of order) |
| duplicate | probability | a data message is sent twice |
| malformed | probability | a garbage frame is inserted before a data message |
| disconnect_every | seconds | the connection is closed abruptly about this often |
| close_code | int | close code used by ``disconnect_every`` (0: drop TCP with no close frame) |
| stall_every / stall_for | seconds | the data stream pauses for ``stall_for`` about every ``stall_every`` |
| slow | seconds | delay before answering each control request (auth, subscribe, REST) |
| auth_fail | count | reject the first N authentication attempts (-1: all) |
| token_expiry | seconds | lifetime of tokens the emulator issues (providers that issue tokens) |
| slow_client | seconds | send the provider's slow-client error and close after this long |

Every decision comes from a ``random.Random`` seeded from ``--seed`` and the connection
number, so one seed gives one fault schedule. Faults apply only to data messages, never
to handshake replies, so a client can always get far enough to observe them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Any, Callable


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class FaultPlan:
    drop: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    malformed: float = 0.0
    disconnect_every: float = 0.0
    close_code: int = 0
    stall_every: float = 0.0
    stall_for: float = 0.0
    slow: float = 0.0
    auth_fail: int = 0
    token_expiry: float = 0.0
    slow_client: float = 0.0

    @classmethod
    def parse(cls, spec: str | None) -> "FaultPlan":
        if not spec:
            return cls()
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, raw = part.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in types:
                raise FaultSpecError(f"--faults: unknown fault '{part}'; known: {', '.join(types)}")
            try:
                value = int(raw) if types[name] in (int, "int") else float(raw)
            except ValueError:
                raise FaultSpecError(f"--faults: {name} needs a number, got '{raw}'") from None
            if name in ("drop", "reorder", "duplicate", "malformed") and not 0 <= value <= 1:
                raise FaultSpecError(f"--faults: {name} is a probability between 0 and 1, got {raw}")
            if value < 0 and name != "auth_fail":
                raise FaultSpecError(f"--faults: {name} must not be negative, got {raw}")
            values[name] = value
        return cls(**values)

    @property
    def any_message_faults(self) -> bool:
        return bool(self.drop or self.reorder or self.duplicate or self.malformed)

    def rng(self, seed: int, conn: int) -> random.Random:
        return random.Random(seed * 1_000_003 + conn)

    def next_interval(self, rng: random.Random, every: float) -> float | None:
        """Seconds until the next periodic fault (uniform in [0.5, 1.5] x ``every``), or None if off."""
        return every * rng.uniform(0.5, 1.5) if every > 0 else None


GARBAGE_FRAMES = (b"\x00\xff\xfe not json", '{"truncated": [1, 2', "\ufffd\u0000{]", "[[[[", "null")


class Outbox:
    """Applies the message faults of a plan to one connection's data messages, in order.

    ``push(payload, ids)`` returns the payloads to send now: ``[]`` (dropped, or held back
    to be swapped with the next), ``[payload]``, ``[payload, payload]`` (duplicated),
    ``[garbage, payload]`` (malformed frame inserted) or ``[next, held]`` (reordered).
    Every sent payload and every fault is written to the journal with its ``ids``.
    ``flush()`` releases a message still held back (call it before a clean close);
    ``abandon()`` journals it as lost (call it when the connection drops). While ``frozen()``
    is true (:meth:`Emulator.freeze`) nothing is sent or journaled.
    """

    def __init__(self, plan: FaultPlan, rng: random.Random, journal, conn: int,
                 garbage: Callable[[random.Random], Any] | None = None,
                 frozen: Callable[[], bool] = lambda: False) -> None:
        self.plan, self.rng, self.journal, self.conn, self.frozen = plan, rng, journal, conn, frozen
        self.garbage = garbage or (lambda r: r.choice(GARBAGE_FRAMES))
        self._held: tuple[Any, dict] | None = None

    def push(self, payload: Any, ids: dict, faultable: bool = True) -> list[Any]:
        plan, rng, out = self.plan, self.rng, []
        if self.frozen():
            return out
        if not faultable or not plan.any_message_faults:
            return self._send(self._release(out), payload, ids)
        if plan.malformed and rng.random() < plan.malformed:
            bad = self.garbage(rng)
            self.journal.write("fault", self.conn, fault="malformed", frame=bad if isinstance(bad, str) else repr(bad))
            out.append(bad)
        if plan.drop and rng.random() < plan.drop:
            self.journal.write("fault", self.conn, fault="drop", ids=[ids])
            return self._release(out)
        if self._held is not None:
            held_payload, held_ids = self._held
            self._held = None
            self.journal.write("fault", self.conn, fault="reorder", ids=[held_ids, ids])
            self._send(out, payload, ids)
            return self._send(out, held_payload, held_ids)
        if plan.reorder and rng.random() < plan.reorder:
            self._held = (payload, ids)
            return out
        self._send(out, payload, ids)
        if plan.duplicate and rng.random() < plan.duplicate:
            self.journal.write("fault", self.conn, fault="duplicate", ids=[ids])
            self._send(out, payload, ids)
        return out

    def flush(self) -> list[Any]:
        return [] if self.frozen() else self._release([])

    @property
    def held_ids(self) -> dict | None:
        """ids of the message held back for a swap (None if none): a feed whose only order
        check is per instrument makes the next message the same instrument's, so the swap shows."""
        return self._held[1] if self._held is not None else None

    def abandon(self) -> None:
        """The connection is gone: journal a message still held back as lost, not sent."""
        if self._held is not None:
            self.journal.write("fault", self.conn, fault="lost_at_disconnect", ids=[self._held[1]])
            self._held = None

    def _release(self, out: list[Any]) -> list[Any]:
        if self._held is not None:
            payload, ids = self._held
            self._held = None
            self._send(out, payload, ids)
        return out

    def _send(self, out: list[Any], payload: Any, ids: dict) -> list[Any]:
        self.journal.write("sent", self.conn, ids=ids)
        out.append(payload)
        return out
