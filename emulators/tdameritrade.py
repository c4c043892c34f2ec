"""TD Ameritrade and Schwab streamer emulators: OAuth + REST discovery + the streamer WebSocket.

A client first calls the REST API, then opens the socket it names and sends ADMIN LOGIN:

* TD Ameritrade: ``POST /v1/oauth2/token`` -> ``GET /v1/userprincipals?fields=streamerSubscriptionKeys,
  streamerConnectionInfo`` (``streamerInfo.streamerSocketUrl`` is a bare ``host:port``; the
  socket is ``ws://<host:port>/ws``) -> LOGIN with the URL-encoded credential string.
* Schwab: ``POST /v1/oauth/token`` -> ``GET /trader/v1/userPreference``
  (``streamerInfo[0].streamerSocketUrl`` is the full ``ws://127.0.0.1:<port>/ws``) -> LOGIN
  with the raw access token and the customer/correl/channel/function ids.

Faultable (drop/reorder/duplicate/malformed) are only messages a consumer can check:
CHART_EQUITY/CHART_FUTURES records (per-key ``seq``; journal ``product_seq``) and
TIMESALE_* records (per-key ``seq`` except TIMESALE_OPTIONS, and the trade id in field 4;
journal ``trade_id``). Level-one deltas, books, screeners, news, actives and account
activity are sent unfaulted (nothing identifies a missing one). Journal ``ids`` carry
``service`` and ``instrument`` (the key); a per-key sequence is scoped by both.

Other faults: ``disconnect_every``/``close_code``, ``stall_every``/``stall_for`` (data and
heartbeats pause), ``slow`` (REST and responses), ``auth_fail`` (first N LOGINs get code 3),
``token_expiry`` (lifetime of issued tokens), ``slow_client`` (code 30 notify, then close).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from tickpipe.config import Secret, setting
from tickpipe.emulators.base import Emulator, EmulatorOptions
from tickpipe.emulators.streamer_fields import SCHWAB, TDA
from tickpipe.emulators.tdameritrade_auth import (Identity, LoginDenied, TokenStore, check_schwab_login,
                                                  check_tda_login, new_identity, preferences_body, principals_body)
from tickpipe.emulators.tdameritrade_link import StreamerLink
from tickpipe.emulators.tdameritrade_records import StreamerMarket, chart_values, hash_symbol

ACCESS_LIFETIME_S = 1800.0
REFRESH_LIFETIME_S = 7 * 86400.0


@dataclass(frozen=True)
class StreamerEmulatorSettings:
    """Section ``emulator_tdameritrade`` / ``emulator_schwab``. No credential set: any well-formed one passes."""

    client_id: Secret | None = setting(None, help="OAuth client id (app key; TDA consumer key without @AMER.OAUTHAP)")
    client_secret: Secret | None = setting(None, help="OAuth client secret (Schwab app secret)")
    refresh_token: Secret | None = setting(None, help="refresh token the token endpoint accepts")
    access_token: Secret | None = setting(None, help="a pre-issued access token REST and LOGIN accept")
    account_id: str = setting("", help="account number handed out by the REST calls (default: from --seed)")
    customer_id: str = setting("", help="Schwab schwabClientCustomerId (default: from --seed)")
    heartbeat_s: float = setting(10.0, minimum=0, help="notify heartbeat period (unconfirmed on Schwab; 0: none)")
    empty_stop_s: float = setting(10.0, minimum=0, help="code 30 + close after this long with no subscription (0: never)")
    second_connection: str = setting("close_old", choices=("close_old", "reject_new"),
                                     help="code 12 rule: notify+close the older session, or reject the new LOGIN")
    symbol_limit: int = setting(500, minimum=1, help="total keys per connection before code 19 (unconfirmed)")
    delayed: bool = setting(False, help="'delayed' flag on level-one images")
    drop_on_token_expiry: bool = setting(False, help="close a session once its login token expires (unconfirmed)")
    chart_sequence_base_min: int = setting(7 * 60, minimum=0, maximum=24 * 60 - 1,
                                           help="CHART_EQUITY SEQUENCE counts minutes from this minute of the "
                                                "US/Eastern day (07:00; inferred from captures, unconfirmed)")
    clock_speed: float = setting(1.0, minimum=0.001, help="market clock speed; 60 gives one minute bar per second")

    @property
    def strict(self) -> bool:
        return any((self.client_id, self.client_secret, self.refresh_token, self.access_token))


def _reveal(secret: Secret | None) -> str:
    return secret.reveal() if secret else ""


class StreamerEmulator(Emulator):
    """Shared by both flavours; subclasses set ``flavour`` and ``provider``."""

    flavour: ClassVar[str] = TDA
    settings_class = StreamerEmulatorSettings
    default_symbols = ("AAPL", "MSFT", "SPY")

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        super().__init__(options)
        self.settings: StreamerEmulatorSettings = self.options.credentials or StreamerEmulatorSettings()
        plan = self.options.faults
        self.tokens = TokenStore(plan.token_expiry or ACCESS_LIFETIME_S, (_reveal(self.settings.access_token),))
        self.identity: Identity = new_identity(self.options.seed, self.settings.account_id, self.settings.customer_id)
        self.market = StreamerMarket(self.options.seed, self.settings.clock_speed)
        for symbol in self.symbols:
            self.market.instrument(symbol, "equity")
        self.sessions: dict[str, StreamerLink] = {}
        self.auth_failures = 0
        self.subscription_key = f"{hash_symbol(self.identity.account_id):x}" * 8

    def routes(self, app: web.Application) -> None:
        if self.flavour == TDA:
            app.router.add_post("/v1/oauth2/token", self.oauth_token)
            app.router.add_get("/v1/userprincipals", self.user_principals)
        else:
            app.router.add_post("/v1/oauth/token", self.oauth_token)
            app.router.add_get("/trader/v1/userPreference", self.user_preference)
        app.router.add_get("/ws", self.websocket)

    # ----- REST -----
    async def oauth_token(self, request: web.Request) -> web.Response:
        """Refresh-token (or authorization-code) grant; Schwab uses Basic client auth, TDA a client_id form field."""
        await self.slow()
        form = await request.post()
        client_id, client_secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return _oauth_error(401, "invalid_client", "malformed Basic authorization")
        client_id = client_id.removesuffix("@AMER.OAUTHAP")
        grant = form.get("grant_type")
        if grant not in ("refresh_token", "authorization_code"):
            return _oauth_error(400, "unsupported_grant_type", "grant_type must be refresh_token or authorization_code")
        proof = str(form.get("refresh_token" if grant == "refresh_token" else "code", ""))
        if not client_id or not proof:
            return _oauth_error(400, "invalid_request", "client id and refresh_token/code are required")
        s = self.settings
        if (s.client_id and client_id != s.client_id.reveal()) or (s.client_secret and client_secret != s.client_secret.reveal()):
            return _oauth_error(401, "invalid_client", "unknown client or wrong secret")
        if grant == "refresh_token" and not self._refresh_ok(proof):
            return _oauth_error(400, "invalid_grant", "refresh token is invalid or expired")
        body: dict[str, Any] = {"access_token": self.tokens.issue("access"), "token_type": "Bearer",
                                "expires_in": int(self.tokens.lifetime_s),
                                "refresh_token": self.tokens.issue("refresh", REFRESH_LIFETIME_S)}
        if self.flavour == SCHWAB:
            body.update(scope="api", id_token=self.tokens.issue("id"))
        else:
            body.update(scope="PlaceTrades AccountAccess MoveMoney", refresh_token_expires_in=int(REFRESH_LIFETIME_S))
        return web.json_response(body)

    def _refresh_ok(self, token: str) -> bool:
        configured = _reveal(self.settings.refresh_token)
        if token == configured:
            return True
        state = self.tokens.state(token)
        return state == "valid" or (not self.settings.strict and state == "unknown")

    def _bearer(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        return token if token and self.tokens.accepts(token, self.settings.strict) else None

    async def user_principals(self, request: web.Request) -> web.Response:
        await self.slow()
        if self._bearer(request) is None:
            return _oauth_error(401, "invalid_token", "The access token provided is expired, revoked or malformed")
        streamer_token = self.tokens.issue("streamer")
        return web.json_response(principals_body(self.identity, self._host(request), streamer_token,
                                                 self.subscription_key))

    async def user_preference(self, request: web.Request) -> web.Response:
        await self.slow()
        if self._bearer(request) is None:
            return _oauth_error(401, "invalid_token", "The access token provided is expired, revoked or malformed")
        return web.json_response(preferences_body(self.identity, f"ws://{self._host(request)}/ws"))

    def _host(self, request: web.Request) -> str:
        """The streamer host as the client reached us (a container name, not a 0.0.0.0 listen address)."""
        return request.host or f"{self.options.host}:{self.port}"

    # ----- streamer -----
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=True, max_msg_size=0, autoping=True)
        await ws.prepare(request)
        conn = self.new_connection(path=request.path, flavour=self.flavour)
        self.track_socket(ws)
        try:
            await StreamerLink(self, ws, request, conn).run()
        finally:
            self.untrack_socket(ws)
        return ws

    def authenticate(self, req: dict, conn: int | None = None) -> tuple[str, str] | LoginDenied:
        """(user, login token) for a good LOGIN; a LoginDenied (code 3) otherwise."""
        plan = self.options.faults
        if plan.auth_fail and (plan.auth_fail < 0 or self.auth_failures < plan.auth_fail):
            self.auth_failures += 1
            self.journal.write("fault", conn, fault="auth_fail", attempt=self.auth_failures)
            return LoginDenied("Login Denied.: token is invalid or has expired.")
        params = req.get("parameters") if isinstance(req.get("parameters"), dict) else {}
        try:
            if self.flavour == TDA:
                return check_tda_login(req, self.tokens, self.identity, self.settings.strict), str(params.get("token"))
            return (check_schwab_login(req, self.tokens, self.identity, self.settings.strict),
                    str(params.get("Authorization")))
        except LoginDenied as exc:
            return exc

    def forget(self, link: StreamerLink) -> None:
        if link.session.user is not None and self.sessions.get(link.session.user) is link:
            del self.sessions[link.session.user]

    def chart_history(self, req: dict) -> dict:
        """TDA CHART_HISTORY_FUTURES GET -> a ``snapshot`` frame (content layout unconfirmed)."""
        params = req.get("parameters") if isinstance(req.get("parameters"), dict) else {}
        symbol = str(params.get("symbol", "/ES"))
        self.market.instrument(symbol, "future")
        candles = []
        for _ in range(5):
            _, bar = self.market.trade(symbol, "future")
            if bar is not None:
                candles.append(bar)
        rows = [{str(i): v for i, v in enumerate(list(chart_values(b).values())[:5])} for b in candles]
        return {"snapshot": [{"service": "CHART_HISTORY_FUTURES", "timestamp": self.market.now_ns() // 1_000_000,
                              "command": "GET", "content": [{"key": symbol, "0": str(req["requestid"]), "1": 0,
                                                             "2": len(rows), "3": rows}]}]}

    def misc_record(self, service: str, key: str, fields) -> dict | None:
        """NEWS_HEADLINE and ACTIVES_* records (TDA); layouts partly unconfirmed."""
        now_ms = self.market.now_ns() // 1_000_000
        if service == "NEWS_HEADLINE":
            story = hash_symbol(f"{key}{now_ms}") % 10**9
            return {"key": key, "1": 0, "2": now_ms, "3": f"{story}", "4": "U", "5": f"{key} headline {story}",
                    "6": f"SN{story}", "7": 0, "8": "", "9": False, "10": "DJ"}
        if service.startswith("ACTIVES_"):
            syms = sorted(self.market.day.items(), key=lambda kv: -kv[1]["volume"])[:5]
            total = sum(int(d["volume"]) for _, d in syms)
            entries = ":".join(f"{s}:{int(d['volume'])}:{float(d['volume'] * 100 / max(total, 1)):.2f}" for s, d in syms)
            return {"key": key, "1": f"{now_ms % 10**6};0;{now_ms};{now_ms};1;1;{total}:{len(syms)}:0:{entries}"}
        return None


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


class TDAmeritradeEmulator(StreamerEmulator):
    provider = "tdameritrade"
    flavour = TDA


class SchwabEmulator(StreamerEmulator):
    provider = "schwab"
    flavour = SCHWAB
