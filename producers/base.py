"""The adapter contract: what a provider adapter writes, and what the shared loop does for it.

A producer is one shared connection loop (:mod:`tickpipe.producers.loop`) driving one
small provider adapter. The adapter knows its provider's endpoint, auth, subscribe and
keepalive; the loop does everything else: session ids, the per-connection ``tp-seq``
counter, verbatim recording of every frame into ``raw.<provider>``, session markers,
the staleness watchdog, capped exponential backoff with full jitter, the slow pace after
a permanent auth failure, back-pressure, resync requests, metrics, readiness, shutdown.

Writing an adapter (``producers/<module>.py``)
----------------------------------------------
::

    @dataclass(frozen=True)
    class EchoSettings:                                  # config section: section_name(provider)
        key: Secret = setting(help="API key (or TICKPIPE_ECHO_KEY_FILE)")   # required fields first
        url: str = setting("wss://feed.example/ws", help="websocket endpoint")
        symbols: tuple[str, ...] = setting(("AAPL",), help="instruments to subscribe")

    class EchoAdapter(FeedAdapter):
        provider = "echo"
        settings_class = EchoSettings

        async def connect(self) -> Transport:
            return await open_websocket(self.settings.url, self.loop_settings)

        async def authenticate(self, session: Session) -> None:
            await session.send_json({"action": "auth", "key": self.settings.key.reveal()})
            reply = await session.recv_json()            # recorded verbatim like every frame
            if reply.get("status") != "ok":
                raise AuthError(f"auth rejected: {reply.get('msg')}", permanent=True)

        async def subscribe(self, session: Session) -> None:
            await session.send_json({"action": "subscribe", "symbols": list(self.settings.symbols)})

        async def resync(self, session: Session, target: ResyncTarget) -> bool:
            if target.instrument not in self.settings.symbols:
                return False                             # not ours: the loop logs and ignores it
            await session.send_json({"action": "unsubscribe", "symbols": [target.instrument]})
            await session.send_json({"action": "subscribe", "symbols": [target.instrument]})
            return True

``tests/producers/test_core_adapter_example.py`` runs exactly this adapter end to end.

The hooks, in the order the loop calls them
-------------------------------------------
1. ``await connect() -> Transport`` -- open one connection (do REST first if the provider
   needs it: TDA ``userprincipals``, Market Prophit ``POST /jwt``). Raise anything on
   failure; :class:`AuthError` if the failure is a credential rejection (e.g. HTTP 401).
   ``open_websocket(url, loop_settings, headers=..., **kw)`` (:mod:`~tickpipe.producers.transport`)
   gives a websocket transport with WebSocket ping/pong done by the library. A socket.io
   adapter wraps its client in ``QueueTransport(send=..., close=...)`` (same module): its
   event handlers ``push()`` each event as text (content type ``CT_SOCKETIO``) and call
   ``closed(code, reason)`` on disconnect; or it implements :class:`Transport` itself.
2. The loop writes a ``session_start`` marker (new session id).
3. ``await authenticate(session)`` -- send credentials, read the answer with
   ``session.recv()``/``recv_json()``; raise ``AuthError(msg, permanent=True)`` when the
   provider rejects the credentials (wrong key: logged once, metric, slow capped retries)
   and ``FeedError``/``AuthError(permanent=False)`` for transient trouble. Default: no-op.
4. ``await subscribe(session)`` -- subscribe EVERYTHING configured (called again after
   every reconnect). May read acks with ``session.recv()``; data frames that arrive first
   are recorded anyway. Coinbase signs a fresh JWT here, per message.
5. Ready. The loop alone reads frames now; for each frame it calls
   ``await on_frame(session, frame)`` (default no-op): answer in-band heartbeats, or
   raise :class:`AuthError`/:class:`FeedError` when a frame says the session is dead
   (an in-band error followed by a close). Keep it cheap (substring tests before parsing).
6. While ready, concurrently: ``await keepalive(session)`` every ``keepalive_interval_s``
   seconds if that class attribute is set (in-band pings); ``await resync(session,
   target)`` for each control request. These may only *send*, never ``recv``.
7. ``session_deadline() -> float | None`` (``time.time()`` epoch seconds) is asked after
   each subscribe: when it passes, the loop closes the session with reason
   ``token_refresh`` and reconnects at once (no backoff): ``connect()`` fetches a new token
   and ``subscribe()`` restores everything (Market Prophit's JWT).
8. On SIGTERM: ``await unsubscribe(session)`` (default no-op; bounded by a timeout), then
   the transport is closed, a ``session_end`` marker written and the sink flushed.

Other class attributes: ``provider`` (a provider id), ``settings_class`` (the provider
section dataclass, read with ``load_section(settings_class, section_name(provider))``),
``content_type`` (for text frames; binary frames default to ``application/msgpack``;
override ``content_type_of(frame)`` for anything else), ``loop_defaults`` (provider-specific
defaults for section ``producer``, e.g. ``{"stale_after_s": 30.0}`` for a feed with 10 s
heartbeats; the config file and ``TICKPIPE_PRODUCER_*`` still win). The adapter is built as
``cls(provider_settings, loop_settings)``; ``self.settings`` and ``self.loop_settings`` hold them.
Override ``endpoint()`` (default: ``settings.url`` without its query string) when the URL
comes from elsewhere or could carry a token: it goes into logs and ``session_start`` markers.
``dumps(obj)`` here gives compact JSON text for requests.

``Session`` gives adapters: ``send(text|bytes)``, ``send_json(obj)``, ``recv(timeout=)``,
``recv_json(timeout=)`` (JSON-decodes a recorded frame; raises ``FeedError`` on garbage),
``session_id``, ``attempt`` (1 for the first connection), ``settings``.

Failures, as classified by the loop: :class:`AuthError` with ``permanent=True`` -> reason
``auth_failed``, slow pace (``producer.auth_retry_min_s`` .. ``auth_retry_max_s``);
:class:`TransportClosed` -> ``closed`` (with close code); no frame for
``producer.stale_after_s`` -> ``stale``; ``asyncio.TimeoutError`` -> ``timeout``; any other
exception -> ``error`` (``connect_failed`` when ``connect()`` raised it). Never catch-and-retry inside an adapter: raise and let the loop
reconnect. Never put secrets in exception messages (use :class:`~tickpipe.config.Secret`
and ``reveal()`` only where the value goes on the wire).

Registry: ``tickpipe.producers.ADAPTERS`` maps provider ids to ``module:Class``:
``alpaca:AlpacaAdapter``, ``tdameritrade:TDAmeritradeAdapter``, ``tdameritrade:SchwabAdapter``,
``coinbase:CoinbaseAdapter``, ``coinbase_exchange:CoinbaseExchangeAdapter``,
``financefeast:FinancefeastAdapter``, ``marketprophit:MarketProphitAdapter``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import orjson

from tickpipe.envelope import CT_JSON, CT_MSGPACK


class FeedError(Exception):
    """A transient failure of a session: the loop records it and reconnects with backoff."""


class AuthError(FeedError):
    """The provider refused our credentials. ``permanent``: retrying soon will not help."""

    def __init__(self, message: str, *, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


class TransportClosed(FeedError):
    """The connection closed; ``code``/``reason`` as the peer (or library) gave them."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"connection closed (code {code}{', ' + reason if reason else ''})")
        self.code, self.reason = code, reason


@runtime_checkable
class Transport(Protocol):
    """One open connection. ``recv`` returns the next frame exactly as received."""

    async def recv(self) -> str | bytes:
        """The next frame; raises :class:`TransportClosed` once the connection is gone."""

    async def send(self, data: str | bytes) -> None:
        """Send one frame; raises :class:`TransportClosed` if the connection is gone."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close (idempotent)."""


@dataclass(frozen=True)
class ResyncTarget:
    """What a control request asks to resubscribe: an instrument, a channel, or both."""

    instrument: str | None = None
    channel: str | None = None
    reason: str = ""

    def describe(self) -> str:
        return "/".join(x for x in (self.channel, self.instrument) if x) or "(everything)"


class Session(Protocol):
    """What an adapter sees of the current connection (implemented by the loop)."""

    session_id: str
    attempt: int

    async def send(self, data: str | bytes) -> None: ...

    async def send_json(self, obj: Any) -> None: ...

    async def recv(self, timeout: float | None = None) -> str | bytes: ...

    async def recv_json(self, timeout: float | None = None) -> Any: ...


class FeedAdapter:
    """Base class of provider adapters: override the hooks documented in the module docstring."""

    provider: ClassVar[str] = ""
    settings_class: ClassVar[type | None] = None
    content_type: ClassVar[str] = CT_JSON
    keepalive_interval_s: ClassVar[float | None] = None
    loop_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, settings: Any, loop_settings: Any = None) -> None:
        import dataclasses

        from tickpipe.producers.settings import ProducerSettings

        self.settings = settings
        self.loop_settings = loop_settings or dataclasses.replace(ProducerSettings(), **self.loop_defaults)

    # ----- required -----
    async def connect(self) -> Transport:
        raise NotImplementedError

    async def subscribe(self, session: Session) -> None:
        raise NotImplementedError

    # ----- optional -----
    async def authenticate(self, session: Session) -> None:
        return None

    async def on_frame(self, session: Session, frame: str | bytes) -> None:
        return None

    async def keepalive(self, session: Session) -> None:
        return None

    async def resync(self, session: Session, target: ResyncTarget) -> bool:
        """Unsubscribe and resubscribe ``target``; False if it is not one of ours."""
        return False

    async def unsubscribe(self, session: Session) -> None:
        return None

    def session_deadline(self) -> float | None:
        return None

    def content_type_of(self, frame: str | bytes) -> str:
        return self.content_type if isinstance(frame, str) else CT_MSGPACK

    def endpoint(self) -> str:
        """A description of where we connect, for logs and markers (no secrets, no query)."""
        url = getattr(self.settings, "url", "") or ""
        return str(url).split("?", 1)[0]


def dumps(obj: Any) -> str:
    """Compact JSON text, as most feeds expect it."""
    return orjson.dumps(obj).decode()
