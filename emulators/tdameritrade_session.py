"""One streamer connection's request handling: frame parsing, SUBS/ADD/UNSUBS/VIEW/QOS, replies.

A client frame holds one or more requests; each gets one ``response`` that echoes
``service``, ``command`` and ``requestid`` (as a string; Schwab also echoes
``SchwabClientCorrelId``)::

    {"requests": [{"service": "LEVELONE_EQUITIES", "requestid": "2", "command": "SUBS",
                   "SchwabClientCustomerId": "<id>", "SchwabClientCorrelId": "<uuid>",
                   "parameters": {"keys": "SCHW,AAPL", "fields": "0,1,2,3"}}]}
    -> {"response": [{"service": "LEVELONE_EQUITIES", "command": "SUBS", "requestid": "2",
                      "SchwabClientCorrelId": "<uuid>", "timestamp": 1669828276886,
                      "content": {"code": 0, "msg": "SUBS command succeeded"}}]}

Codes used: 0 success, 11 service not available in this flavour, 19 symbol limit,
20 request before LOGIN, 21 bad command format (garbage, oversized or incomplete requests).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from tickpipe.emulators.streamer_fields import CHANGE, SCHWAB, TDA, delivery
from tickpipe.emulators.tdameritrade_records import LevelOneCache

BAD_FORMAT = "Bad command formatting"
NOT_AVAILABLE = "Service not available or temporary down"
DATA_COMMANDS = ("SUBS", "ADD", "UNSUBS", "VIEW")


class RequestError(Exception):
    """A request (or frame) the server answers with an error code."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


@dataclass
class Subscription:
    keys: dict[str, str] = field(default_factory=dict)   # key -> command that created it (SUBS/ADD)
    fields: frozenset[int] | None = None                  # None: every field


def parse_frame(text: str | bytes, max_bytes: int) -> list[Any]:
    """A client frame -> its list of requests (each still to be checked), or RequestError(21)."""
    if len(text) > max_bytes:
        raise RequestError(21, f"{BAD_FORMAT}: frame of {len(text)} bytes exceeds {max_bytes}")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise RequestError(21, f"{BAD_FORMAT}: not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("requests"), (list, dict)) or not doc["requests"]:
        raise RequestError(21, f"{BAD_FORMAT}: expected {{\"requests\": [...]}}")
    return doc["requests"] if isinstance(doc["requests"], list) else [doc["requests"]]


def echo(req: Any) -> dict[str, Any]:
    """The identifying fields a reply echoes, as far as the request has them."""
    req = req if isinstance(req, dict) else {}
    rid = req.get("requestid")
    return {"service": str(req.get("service", "ADMIN")), "command": str(req.get("command", "")),
            "requestid": str(rid) if rid is not None else "-1",
            "correl": req.get("SchwabClientCorrelId")}


def check_request(req: Any) -> dict:
    if not isinstance(req, dict):
        raise RequestError(21, f"{BAD_FORMAT}: a request must be an object")
    for name in ("service", "command", "requestid"):
        if not isinstance(req.get(name), (str, int)) or isinstance(req.get(name), bool) or req.get(name) == "":
            raise RequestError(21, f"{BAD_FORMAT}: '{name}' is required")
    return req


class StreamerSession:
    """Subscriptions and per-key state of one connection."""

    def __init__(self, flavour: str, symbol_limit: int) -> None:
        self.flavour, self.symbol_limit = flavour, symbol_limit
        self.user: str | None = None              # set by a successful LOGIN
        self.subs: dict[str, Subscription] = {}
        self.cache = LevelOneCache()
        self.seq: dict[tuple[str, str], int] = {}  # per (service, key) "All Sequence" counter
        self.announce: list[tuple[str, str]] = []  # (service, key) needing an immediate record
        self.qos = 2
        self.empty_since = time.monotonic()

    def response(self, req: Any, code: int, msg: str) -> dict:
        e = echo(req)
        body: dict[str, Any] = {"service": e["service"], "requestid": e["requestid"], "command": e["command"]}
        if self.flavour == SCHWAB:
            body["SchwabClientCorrelId"] = e["correl"] if isinstance(e["correl"], str) else ""
        body["timestamp"] = time.time_ns() // 1_000_000
        body["content"] = {"code": code, "msg": msg}
        return {"response": [body]}

    def keys_total(self) -> int:
        return sum(len(s.keys) for s in self.subs.values())

    def subscribed(self) -> list[tuple[str, str, str]]:
        """(service, key, creating command) of every subscription, in a stable order."""
        return [(svc, key, cmd) for svc, sub in self.subs.items() for key, cmd in sub.keys.items()]

    def apply(self, req: dict) -> str:
        """Run SUBS/ADD/UNSUBS/VIEW (or TDA QOS); return the success msg or raise RequestError."""
        service, command = str(req["service"]), str(req["command"])
        params = req.get("parameters") if isinstance(req.get("parameters"), dict) else {}
        if service == "ADMIN" and command == "QOS" and self.flavour == TDA:
            level = str(params.get("qoslevel", ""))
            if level not in {str(i) for i in range(6)}:
                raise RequestError(21, f"{BAD_FORMAT}: qoslevel must be 0-5")
            self.qos = int(level)
            return "QoS command succeeded. Set qoslevel=" + level
        if delivery(self.flavour, service) is None:
            raise RequestError(11, NOT_AVAILABLE)
        if command not in DATA_COMMANDS:
            raise RequestError(21, f"{BAD_FORMAT}: unknown command {command}")
        fields = _fields(params.get("fields")) if "fields" in params else None
        keys = _keys(params.get("keys")) if command != "VIEW" else []
        sub = self.subs.setdefault(service, Subscription())
        if command in ("SUBS", "ADD"):
            new = {k: command for k in keys if command == "SUBS" or k not in sub.keys}
            total = self.keys_total() - (len(sub.keys) if command == "SUBS" else 0) + len(new)
            if total > self.symbol_limit:
                raise RequestError(19, f"Reached symbol limit of {self.symbol_limit}")
            if command == "SUBS":
                sub.keys = new
                self.cache.reset(service)
            else:
                sub.keys.update(new)
                self.cache.reset(service, set(new))
            if fields is not None:
                sub.fields = fields
            self.announce.extend((service, k) for k in new)
        elif command == "UNSUBS":
            for k in keys:
                sub.keys.pop(k, None)
            self.cache.reset(service, set(keys))
        else:  # VIEW
            if fields is None:
                raise RequestError(21, f"{BAD_FORMAT}: VIEW needs fields")
            sub.fields = fields
            self.cache.reset(service)
        if not sub.keys:
            del self.subs[service]
        if self.subs:
            self.empty_since = None
        elif self.empty_since is None:
            self.empty_since = time.monotonic()
        return f"{command} command succeeded"

    def next_seq(self, service: str, key: str) -> int:
        n = self.seq.get((service, key), 0)
        self.seq[(service, key)] = n + 1
        return n

    def is_change(self, service: str) -> bool:
        return delivery(self.flavour, service) == CHANGE


def _keys(raw: Any) -> list[str]:
    if not isinstance(raw, str) or not raw.strip():
        raise RequestError(21, f"{BAD_FORMAT}: 'keys' must be a comma-separated string of symbols")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    return list(dict.fromkeys(keys))


def _fields(raw: Any) -> frozenset[int]:
    text = ",".join(str(x) for x in raw) if isinstance(raw, list) else raw
    try:
        ids = frozenset(int(x) for x in str(text).split(",") if x.strip() != "")
    except ValueError:
        raise RequestError(21, f"{BAD_FORMAT}: 'fields' must be comma-separated field numbers") from None
    if not ids or min(ids) < 0:
        raise RequestError(21, f"{BAD_FORMAT}: 'fields' must be comma-separated field numbers")
    return ids
