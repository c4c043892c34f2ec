"""Financefeast Stream API v1 producer adapter: token as the first message, then every price.

Session (``../shared/protocols/financefeast.md``)::

    > {"type":"authenticate","data":{"token":"pk_..."}}
    < {"type":"authenticated","data":{"message":"You have been authenticated to the Stream api. Data stream now starts"}}
    < {"type":"price","data":{"date":"2021-09-29T09:35:53","price":3.0424,"volume":181123,"symbol":"NZB.NZ"}}

There is nothing to subscribe (a firehose of every symbol) and so nothing to resync or
unsubscribe. Keepalive is WebSocket ping/pong by the library, every 10 s with an 8 s
pong timeout like the official client. Refusals: ``Token not authorised`` and ``no access``
are permanent (slow retries, not the official client's 5-second loop), and so is a
close with a policy code and no JSON (the unconfirmed "403" form); ``stream limit`` is
transient (backoff: the previous stream may still count). An ``error`` after login
ends the session (the server drops the socket after it).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from tickpipe.config import Secret, setting
from tickpipe.envelope import CT_JSON
from tickpipe.producers.base import AuthError, FeedAdapter, FeedError, Session, Transport, TransportClosed
from tickpipe.producers.transport import open_websocket

PERMANENT_ERRORS = ("not authorised", "no access")
REFUSAL_CLOSE_CODES = (1008, 4001, 4003)


@dataclass(frozen=True)
class FinancefeastSettings:
    """Section ``financefeast`` (env ``TICKPIPE_FINANCEFEAST_<FIELD>``)."""

    token: Secret = setting(help="API token, pk_ (production) or tk_ (test) (or TICKPIPE_FINANCEFEAST_TOKEN_FILE)")
    url: str = setting("wss://stream.financefeast.io/ws", help="stream endpoint (test: wss://stream.test.financefeast.io/ws)")


class FinancefeastAdapter(FeedAdapter):
    provider = "financefeast"
    settings_class = FinancefeastSettings
    content_type = CT_JSON
    # WebSocket pings as the official client; the exchange is quiet outside NZX hours, so
    # only a very long silence (not a quiet market) means the connection is dead.
    loop_defaults = {"ping_interval_s": 10.0, "ping_timeout_s": 8.0, "stale_after_s": 900.0}

    async def connect(self) -> Transport:
        return await open_websocket(self.settings.url, self.loop_settings)

    async def authenticate(self, session: Session) -> None:
        await session.send_json({"type": "authenticate", "data": {"token": self.settings.token.reveal()}})
        try:
            reply = await session.recv_json()
        except TransportClosed as exc:
            if exc.code in REFUSAL_CLOSE_CODES:
                raise AuthError(f"financefeast closed the login with code {exc.code} ({exc.reason})") from None
            raise
        kind = reply.get("type") if isinstance(reply, dict) else None
        if kind == "authenticated":
            return
        if kind == "error":
            raise refusal(error_text(reply))
        raise FeedError(f"financefeast: unexpected reply to authenticate: {str(reply)[:200]}")

    async def subscribe(self, session: Session) -> None:
        return None  # no subscriptions: every symbol streams after login

    async def on_frame(self, session: Session, frame: str | bytes) -> None:
        needle = '"error"' if isinstance(frame, str) else b'"error"'
        if needle not in frame:
            return
        try:
            doc = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return  # a garbage frame is recorded verbatim; the normalizer routes it to the DLQ
        if isinstance(doc, dict) and doc.get("type") == "error":
            raise FeedError(f"financefeast error: {error_text(doc)}")


def error_text(doc: dict) -> str:
    data = doc.get("data")
    return str(data.get("message") if isinstance(data, dict) else data)[:300]


def refusal(text: str) -> FeedError:
    """The right failure for a login ``error``: permanent for a bad token or plan, else transient."""
    lowered = text.lower()
    if any(marker in lowered for marker in PERMANENT_ERRORS):
        return AuthError(f"financefeast refused the login: {text}", permanent=True)
    if "stream limit" in lowered:
        return AuthError(f"financefeast refused the login: {text}", permanent=False)
    return FeedError(f"financefeast refused the login: {text}")
