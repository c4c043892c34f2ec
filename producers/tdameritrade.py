"""TD Ameritrade and Schwab streamer producer adapters (one module, two flavours).

Each connection: OAuth refresh -> REST discovery (TDA ``GET /v1/userprincipals``, Schwab
``GET /trader/v1/userPreference``) -> open the streamer socket it names -> ADMIN LOGIN ->
one SUBS per configured service. Keepalive is the server's ``notify`` heartbeat (~10 s),
watched by the loop's staleness timer (``stale_after_s`` 30 s). A session::

    > {"requests":[{"service":"ADMIN","requestid":"0","command":"LOGIN","SchwabClientCustomerId":"..",
                    "SchwabClientCorrelId":"..","parameters":{"Authorization":"<token>",...}}]}
    < {"response":[{"service":"ADMIN","command":"LOGIN","requestid":"0","content":{"code":0,"msg":"..."}}]}
    > {"requests":[{"service":"LEVELONE_EQUITIES","requestid":"1","command":"SUBS",...,
                    "parameters":{"keys":"AAPL,MSFT","fields":"0,1,2,3"}}]}
    < {"notify":[{"heartbeat":"1674011769604"}]}

Subscriptions come from one setting, ``SERVICE=KEY,KEY[@FIELD,FIELD];SERVICE=...``; without
``@fields`` every field of the flavour's map is requested (``tickpipe.emulators.streamer_fields``).
Errors: token endpoint 400/401 and LOGIN code 3 with fresh credentials are permanent auth
failures; code 12 (another session) and an expired cached token are retried.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

import aiohttp
import orjson

from tickpipe.config import ConfigError, Secret, register_secret, setting
from tickpipe.emulators.streamer_fields import FIELDS, SCHWAB, TDA
from tickpipe.producers.base import AuthError, FeedAdapter, FeedError, ResyncTarget, Session, Transport, dumps
from tickpipe.producers.transport import open_websocket

API_URLS = {TDA: "https://api.tdameritrade.com", SCHWAB: "https://api.schwabapi.com"}
TOKEN_PATHS = {TDA: "/v1/oauth2/token", SCHWAB: "/v1/oauth/token"}
DISCOVERY_PATHS = {TDA: "/v1/userprincipals?fields=streamerSubscriptionKeys,streamerConnectionInfo",
                   SCHWAB: "/trader/v1/userPreference"}
DEFAULT_SUBSCRIPTIONS = {TDA: "QUOTE=AAPL,MSFT;CHART_EQUITY=AAPL,MSFT;TIMESALE_EQUITY=AAPL,MSFT",
                         SCHWAB: "LEVELONE_EQUITIES=AAPL,MSFT;CHART_EQUITY=AAPL,MSFT"}
SESSION_ENDING = {12: "another streamer session opened for this user", 30: "server stopped streaming",
                  3: "login no longer valid"}


@dataclass(frozen=True)
class StreamerSettings:
    """Section ``tdameritrade`` / ``schwab``. Secrets also from ``*_FILE``."""

    client_id: Secret | None = setting(None, help="OAuth client id (app key; TDA consumer key); needed to refresh")
    refresh_token: Secret | None = setting(None, help="OAuth refresh token (new access tokens on every reconnect)")
    client_secret: Secret | None = setting(None, help="OAuth client secret (Schwab app secret)")
    access_token: Secret | None = setting(None, help="a fixed access token, used when there is no refresh token")
    api_url: str = setting("", help="REST base URL (default: the provider's API host)")
    subscriptions: str = setting("", help="SERVICE=KEY,KEY[@FIELD,FIELD];... (default: level one and charts of AAPL,MSFT)")
    streamer_scheme: str = setting("wss", choices=("wss", "ws"), help="TDA: scheme for the bare streamerSocketUrl host")


@dataclass(frozen=True)
class Subscription:
    service: str
    keys: tuple[str, ...]
    fields: tuple[int, ...]

    def parameters(self, keys: tuple[str, ...] | None = None) -> dict:
        return {"keys": ",".join(keys or self.keys), "fields": ",".join(map(str, self.fields))}


def parse_subscriptions(spec: str, flavour: str, setting_name: str) -> tuple[Subscription, ...]:
    """``"LEVELONE_EQUITIES=AAPL,MSFT@0,1,2;CHART_EQUITY=AAPL"`` -> subscriptions, validated for the flavour."""
    subs = []
    for part in (p.strip() for p in spec.split(";")):
        if not part:
            continue
        service, sep, rest = part.partition("=")
        keys_text, _, fields_text = rest.partition("@")
        service, keys = service.strip().upper(), tuple(k.strip() for k in keys_text.split(",") if k.strip())
        if not sep or not keys:
            raise ConfigError(f"{setting_name}: '{part}' is not SERVICE=KEY,KEY[@FIELDS]")
        if service not in FIELDS[flavour]:
            raise ConfigError(f"{setting_name}: {flavour} has no service {service}; known: {', '.join(FIELDS[flavour])}")
        try:
            fields = tuple(sorted({int(f) for f in fields_text.split(",") if f.strip()})) if fields_text else \
                tuple(sorted(FIELDS[flavour][service]))
        except ValueError:
            raise ConfigError(f"{setting_name}: fields of {service} must be numbers, got '{fields_text}'") from None
        subs.append(Subscription(service, keys, fields))
    if not subs:
        raise ConfigError(f"{setting_name}: at least one subscription is needed")
    return tuple(subs)


class StreamerAdapter(FeedAdapter):
    flavour = TDA
    settings_class = StreamerSettings
    loop_defaults = {"stale_after_s": 30.0}   # heartbeats come every ~10 s

    def __init__(self, settings: StreamerSettings, loop_settings=None) -> None:
        super().__init__(settings, loop_settings)
        prefix = f"TICKPIPE_{self.provider.upper()}"
        if not settings.refresh_token and not settings.access_token:
            raise ConfigError(f"{prefix}_REFRESH_TOKEN: a refresh token (or {prefix}_ACCESS_TOKEN) is needed")
        if settings.refresh_token and not settings.client_id:
            raise ConfigError(f"{prefix}_CLIENT_ID: the OAuth client id is needed to refresh tokens")
        self.subscriptions = parse_subscriptions(settings.subscriptions or DEFAULT_SUBSCRIPTIONS[self.flavour],
                                                 self.flavour, f"{prefix}_SUBSCRIPTIONS")
        self.api_url = (settings.api_url or API_URLS[self.flavour]).rstrip("/")
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_fresh = False
        self._refresh = settings.refresh_token.reveal() if settings.refresh_token else ""
        self._info: dict = {}
        self._request_id = 0

    def endpoint(self) -> str:
        return self.api_url

    # ----- REST -----
    async def connect(self) -> Transport:
        timeout = aiohttp.ClientTimeout(total=self.loop_settings.connect_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            token = await self._access_token(http)
            async with http.get(self.api_url + DISCOVERY_PATHS[self.flavour],
                                headers={"Authorization": f"Bearer {token}"}) as resp:
                if resp.status == 401:
                    self._token = None
                    raise AuthError(f"{self.provider} REST refused the access token (HTTP 401)",
                                    permanent=not self._refresh)
                if resp.status != 200:
                    raise FeedError(f"{self.provider} streamer discovery failed with HTTP {resp.status}")
                self._info = await resp.json(content_type=None)
        return await open_websocket(self._socket_url(), self.loop_settings)

    async def _access_token(self, http: aiohttp.ClientSession) -> str:
        self._token_fresh = False
        if self._token and time.monotonic() < self._token_expires - 60:
            return self._token
        if not self._refresh:
            return self.settings.access_token.reveal()
        form = {"grant_type": "refresh_token", "refresh_token": self._refresh}
        headers = {}
        client_id = self.settings.client_id.reveal()
        if self.flavour == TDA:
            form["client_id"] = client_id if "@" in client_id else f"{client_id}@AMER.OAUTHAP"
        else:
            secret = self.settings.client_secret.reveal() if self.settings.client_secret else ""
            headers["Authorization"] = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        async with http.post(self.api_url + TOKEN_PATHS[self.flavour], data=form, headers=headers) as resp:
            body = await resp.json(content_type=None) if resp.content_type.endswith("json") else {}
            if resp.status in (400, 401):
                raise AuthError(f"{self.provider} token endpoint refused the credentials: HTTP {resp.status} "
                                f"{body.get('error', '')}", permanent=True)
            if resp.status != 200 or "access_token" not in body:
                raise FeedError(f"{self.provider} token endpoint failed with HTTP {resp.status}")
        self._token, self._token_fresh = body["access_token"], True
        register_secret(self._token, short_lived=True)                  # logs mask it like a configured secret
        self._token_expires = time.monotonic() + float(body.get("expires_in", 1800))
        self._refresh = body.get("refresh_token") or self._refresh     # Schwab may rotate it
        register_secret(self._refresh)
        return self._token

    def _socket_url(self) -> str:
        if self.flavour == TDA:
            return f"{self.settings.streamer_scheme}://{self._info['streamerInfo']['streamerSocketUrl']}/ws"
        return self._info["streamerInfo"][0]["streamerSocketUrl"]

    # ----- streamer -----
    def _request(self, service: str, command: str, parameters: dict) -> dict:
        rid, self._request_id = str(self._request_id), self._request_id + 1
        if self.flavour == TDA:
            ids = {"account": self._info["accounts"][0]["accountId"], "source": self._info["streamerInfo"]["appId"]}
        else:
            si = self._info["streamerInfo"][0]
            ids = {"SchwabClientCustomerId": si["schwabClientCustomerId"], "SchwabClientCorrelId": si["schwabClientCorrelId"]}
        return {"service": service, "requestid": rid, "command": command, **ids, "parameters": parameters}

    def _login_parameters(self) -> dict:
        if self.flavour == SCHWAB:
            si = self._info["streamerInfo"][0]
            return {"Authorization": self._token or self.settings.access_token.reveal(),
                    "SchwabClientChannel": si["schwabClientChannel"], "SchwabClientFunctionId": si["schwabClientFunctionId"]}
        si, acct = self._info["streamerInfo"], self._info["accounts"][0]
        stamp = int(datetime.strptime(si["tokenTimestamp"], "%Y-%m-%dT%H:%M:%S%z").timestamp() * 1000)
        credential = {"userid": acct["accountId"], "token": si["token"], "company": acct["company"],
                      "segment": acct["segment"], "cddomain": acct["accountCdDomainId"], "usergroup": si["userGroup"],
                      "accesslevel": si["accessLevel"], "authorized": "Y", "timestamp": stamp,
                      "appid": si["appId"], "acl": si["acl"]}
        return {"credential": urlencode(credential), "token": si["token"], "version": "1.0"}

    async def authenticate(self, session: Session) -> None:
        self._request_id = 0
        login = self._request("ADMIN", "LOGIN", self._login_parameters())
        await session.send(dumps({"requests": [login]}))
        (reply,) = await self._responses(session, {login["requestid"]})
        code, msg = reply["content"].get("code"), reply["content"].get("msg", "")
        if code == 3:
            self._token = None
            raise AuthError(f"{self.provider} LOGIN denied (code 3): {msg}", permanent=self._token_fresh or not self._refresh)
        if code == 12:
            raise AuthError(f"{self.provider} LOGIN refused (code 12): {msg}", permanent=False)
        if code != 0:
            raise FeedError(f"{self.provider} LOGIN failed (code {code}): {msg}")

    async def subscribe(self, session: Session) -> None:
        requests = [self._request(s.service, "SUBS", s.parameters()) for s in self.subscriptions]
        await session.send(dumps({"requests": requests}))
        for reply in await self._responses(session, {r["requestid"] for r in requests}):
            if reply["content"].get("code") != 0:
                raise FeedError(f"{self.provider} {reply.get('service')} SUBS failed (code "
                                f"{reply['content'].get('code')}): {reply['content'].get('msg')}")

    async def resync(self, session: Session, target: ResyncTarget) -> bool:
        """UNSUBS then ADD the instrument on each configured service that has it (SUBS would replace the set)."""
        chosen = [s for s in self.subscriptions
                  if target.instrument in s.keys and target.channel in (None, s.service)]
        for sub in chosen:
            keys = (target.instrument,)
            await session.send(dumps({"requests": [self._request(sub.service, "UNSUBS", {"keys": keys[0]}),
                                                   self._request(sub.service, "ADD", sub.parameters(keys))]}))
        return bool(chosen)

    async def unsubscribe(self, session: Session) -> None:
        await session.send(dumps({"requests": [self._request("ADMIN", "LOGOUT", {})]}))

    async def on_frame(self, session: Session, frame: str | bytes) -> None:
        """A notify with code 3/12/30 means the server is ending this session."""
        if not isinstance(frame, str) or '"notify"' not in frame or '"code"' not in frame:
            return
        for note in _entries(frame, "notify"):
            code = (note.get("content") or {}).get("code") if isinstance(note, dict) else None
            if code in SESSION_ENDING:
                msg = note["content"].get("msg", "")
                raise FeedError(f"{self.provider} notify code {code} ({SESSION_ENDING[code]}): {msg}")

    async def _responses(self, session: Session, wanted: set[str]) -> list[dict]:
        """Read until every wanted requestid has its ``response`` (other frames are recorded and skipped)."""
        got: dict[str, dict] = {}
        while len(got) < len(wanted):
            frame = await session.recv()
            for reply in _entries(frame, "response"):
                if isinstance(reply, dict) and str(reply.get("requestid")) in wanted:
                    got[str(reply["requestid"])] = reply
            await self.on_frame(session, frame)
        return [got[rid] for rid in sorted(wanted, key=int)]


def _entries(frame: str | bytes, kind: str) -> list:
    try:
        doc = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return []
    entries = doc.get(kind) if isinstance(doc, dict) else None
    return entries if isinstance(entries, list) else []


class TDAmeritradeAdapter(StreamerAdapter):
    provider = "tdameritrade"
    flavour = TDA


class SchwabAdapter(StreamerAdapter):
    provider = "schwab"
    flavour = SCHWAB
