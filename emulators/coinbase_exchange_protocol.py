"""Coinbase Exchange feed protocol for the emulator: settings, subscribe parsing, HMAC auth.

A signed subscribe (the only client message type besides ``unsubscribe``)::

    {"type":"subscribe","product_ids":["BTC-USD"],"channels":["full","heartbeat"],
     "key":"8f3c…","passphrase":"p4ss","timestamp":"1700000000.123456","signature":"4ce8mVb0…="}

``signature = base64(HMAC-SHA256(base64decode(secret), timestamp + "GET" + "/users/self/verify"))``.
Every reply is a JSON object; errors look like
``{"type":"error","message":"Failed to subscribe","reason":"FOO-USD is not a valid product"}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field

from tickpipe.config import Secret, setting

VERIFY_PATH = "/users/self/verify"
ALIASES = {"ticker_batch": "ticker_1000", "level2_batch": "level2_50"}   # acks use the old names
CHANNELS = {"heartbeat", "status", "ticker", "ticker_1000", "level2", "level2_50", "matches", "full", "user",
            "level3", "auctionfeed", "rfq_matches", "balance"}
PRODUCTLESS = {"status", "balance", "rfq_matches"}
AUTH_REQUIRED_REASON = ("level2, level3, and full channels now require authentication. "
                        "https://docs.cloud.coinbase.com/exchange/docs/websocket-auth")
BAD_AUTH = "Sorry, you could not be authenticated: Bad Request"
UNAUTHORIZED = "Sorry, you could not be authenticated: Unauthorized"


@dataclass(frozen=True)
class CoinbaseExchangeEmulatorSettings:
    """Section ``emulator_coinbase_exchange``: credentials to enforce and unconfirmed behaviours."""

    api_key: Secret | None = setting(None, help="Exchange API key to require (unset: any well-formed key)")
    api_secret: Secret | None = setting(None, help="its base64 secret, used to verify signatures")
    passphrase: Secret | None = setting(None, help="its passphrase")
    auth_channels: tuple[str, ...] = setting(("full", "level2", "level3", "user", "balance"),
                                             help="channels that need a signed subscribe (rfq_matches: unconfirmed)")
    bad_auth: str = setting("reject", choices=("reject", "downgrade"),
                            help="bad signature: 'reject' = auth error, request ignored; 'downgrade' = treat as "
                                 "unsigned (unconfirmed which the live server does)")
    timestamp_string_only: bool = setting(False, help="refuse a JSON-number timestamp (the 2019 sandbox did)")
    max_clock_skew_s: float = setting(30.0, minimum=0, help="oldest/newest accepted signing timestamp")
    ack_account_ids: bool = setting(True, help="acks carry account_ids (since 2024-01); false = 2021 shape")
    snapshot_time: bool = setting(True, help="level2 snapshots carry 'time' (since 2023-03)")
    subscribe_deadline_s: float = setting(5.0, minimum=0, help="close a socket that sent no subscribe by then")
    deadline_close_code: int = setting(1000, help="close code of the subscribe deadline (unconfirmed)")
    error_close_code: int = setting(1008, help="close code after ErrSlowConsume/ErrSlowRead/Message too big "
                                               "and auth expiry (unconfirmed)")
    heartbeat_interval_s: float = setting(1.0, minimum=0.05, help="heartbeat period per product")
    status_interval_s: float = setting(10.0, minimum=0, help="status resend period (0: on subscribe only; unconfirmed)")
    status_min_bytes: int = setting(0, minimum=0, help="pad status frames to at least this size (live: ~740 KB)")
    level2_batch_ms: float = setting(50.0, minimum=1, help="level2_batch (level2_50) batching interval")
    ticker_batch_s: float = setting(5.0, minimum=0.1, help="ticker_batch (ticker_1000) interval")
    connects_per_s: float = setting(8.0, minimum=0, help="connection attempts per second before HTTP 429 (0: off)")
    connect_burst: int = setting(20, minimum=1, help="connection burst allowance")
    inbound_per_s: float = setting(10.0, minimum=0, help="client messages per second before ErrSlowRead (0: off)")
    inbound_burst: int = setting(1000, minimum=1, help="client message burst allowance")
    rest_per_s: float = setting(0.0, minimum=0, help="public REST calls per second before HTTP 429 (0: off; live: 10)")
    rest_burst: int = setting(15, minimum=1, help="REST burst allowance")
    send_queue_cap: int = setting(100_000, minimum=10, help="queued messages per socket before ErrSlowConsume")
    unknown_channel_reason: str = setting("{name} is not a valid channel", help="error reason (unconfirmed text)")
    auth_carries_over: bool = setting(False, help="an unsigned subscribe on a socket that signed before counts as "
                                                  "signed (unconfirmed)")
    server_ping_s: float = setting(0.0, minimum=0, help="server WebSocket pings and pong timeout (0: none; unconfirmed)")
    level2_batch_depth: int = setting(0, minimum=0, help="levels per side in level2_batch snapshots (0: full; unconfirmed)")
    level3_schema_per_subscribe: bool = setting(False, help="resend the level3 schema on every subscribe (unconfirmed)")
    unknown_type_every_s: float = setting(0.0, minimum=0, help="send a frame of an unknown type this often (0: never); "
                                                               "clients must ignore it")


@dataclass
class Request:
    """A parsed subscribe/unsubscribe: ack channel name -> product ids (or account ids for balance)."""

    kind: str
    channels: dict[str, set[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def failure(self) -> str:
        return "Failed to subscribe" if self.kind == "subscribe" else "Failed to unsubscribe"


def error(message: str, reason: str) -> dict:
    return {"type": "error", "message": message, "reason": reason}


def parse_request(msg: object, products: set[str], settings: CoinbaseExchangeEmulatorSettings) -> Request | dict:
    """Validate a client message; returns a :class:`Request` or an error frame for the whole message."""
    if not isinstance(msg, dict) or msg.get("type") not in ("subscribe", "unsubscribe"):
        return error("Failed to subscribe", "invalid (un)subscribe msg")
    req = Request(msg["type"])
    channels, root = msg.get("channels"), msg.get("product_ids", [])
    if not isinstance(channels, list) or not channels:
        return error(req.failure, "No channels provided")
    if not _is_str_list(root):
        return error(req.failure, "product_ids must be a list of strings")
    for item in channels:
        name, listed, accounts = item, [], msg.get("account_ids")
        if isinstance(item, dict):
            name, listed, accounts = item.get("name"), item.get("product_ids") or [], item.get("account_ids", accounts)
        if not isinstance(name, str) or ALIASES.get(name, name) not in CHANNELS:
            req.errors.append(settings.unknown_channel_reason.format(name=name))
            continue
        name = ALIASES.get(name, name)
        if name == "balance":
            if not _is_str_list(accounts or []):
                req.errors.append("account_ids must be a list of strings")
                continue
            req.channels.setdefault(name, set()).update(accounts or [])
            continue
        if name in PRODUCTLESS:
            req.channels.setdefault(name, set())
            continue
        if not _is_str_list(listed):
            req.errors.append("product_ids must be a list of strings")
            continue
        wanted = set(root) | set(listed)
        for pid in sorted(wanted - products):
            req.errors.append(f"{pid} is not a valid product")
        valid = wanted & products
        if valid or req.kind == "unsubscribe":
            req.channels.setdefault(name, set()).update(valid)
        elif not wanted:
            req.errors.append(f"You need to specify at least one product ID for channel {name}")
    req.errors = list(dict.fromkeys(req.errors))   # one error per bad id, not per channel
    return req


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def sign(secret_b64: str, timestamp: str) -> str:
    """The subscribe signature, as clients compute it."""
    key = base64.b64decode(secret_b64)
    mac = hmac.new(key, f"{timestamp}GET{VERIFY_PATH}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def has_auth_fields(msg: dict) -> bool:
    return any(k in msg for k in ("key", "passphrase", "timestamp", "signature"))


def check_auth(msg: dict, settings: CoinbaseExchangeEmulatorSettings, now: float) -> dict | None:
    """None if the signed fields are acceptable, else the provider's error frame."""
    key, passphrase, ts, sig = (msg.get(k) for k in ("key", "passphrase", "timestamp", "signature"))
    if not all(isinstance(v, str) and v for v in (key, passphrase, sig)):
        return error(BAD_AUTH, "invalid signature")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and not settings.timestamp_string_only:
        ts = repr(ts) if isinstance(ts, float) else str(ts)
    if not isinstance(ts, str):
        return error(BAD_AUTH, "invalid timestamp")
    try:
        when = float(ts)
        given = base64.b64decode(sig, validate=True)
    except (ValueError, binascii.Error):
        return error(BAD_AUTH, "invalid signature")
    if abs(now - when) > settings.max_clock_skew_s:
        return error(BAD_AUTH, "request timestamp expired")
    if settings.api_key is not None and not hmac.compare_digest(key, settings.api_key.reveal()):
        return error(UNAUTHORIZED, "invalid API key")
    if settings.passphrase is not None and not hmac.compare_digest(passphrase, settings.passphrase.reveal()):
        return error(UNAUTHORIZED, "invalid passphrase")
    if settings.api_secret is not None:
        expected = base64.b64decode(sign(settings.api_secret.reveal(), ts))
        if not hmac.compare_digest(given, expected):
            return error(BAD_AUTH, "invalid signature")
    elif len(given) != hashlib.sha256().digest_size:
        return error(BAD_AUTH, "invalid signature")
    return None


def ack(subscriptions: dict[str, set[str]], with_account_ids: bool) -> dict:
    """The ``subscriptions`` frame listing everything the socket is subscribed to."""
    channels = []
    for name, ids in subscriptions.items():
        entry = {"name": name, "product_ids": None if name == "balance" else sorted(ids)}
        if with_account_ids or name == "balance":
            entry["account_ids"] = sorted(ids) if name == "balance" else None
        channels.append(entry)
    return {"type": "subscriptions", "channels": channels}
