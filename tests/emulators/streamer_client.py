"""A small raw TDA/Schwab streamer client for the emulator tests: REST discovery, LOGIN, requests, reading.

It speaks the protocol exactly as ``shared/protocols/tdameritrade.md`` describes (the
credential string of TDA, the id fields of Schwab) over real HTTP and WebSocket clients.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import datetime
from urllib.parse import urlencode

import aiohttp
import websockets

CREDENTIAL_ORDER = ("userid", "token", "company", "segment", "cddomain", "usergroup", "accesslevel",
                    "authorized", "timestamp", "appid", "acl")


async def fetch_token(emu, client_id="app-key", secret="app-secret", refresh="refresh-1") -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as http:
        if emu.flavour == "tdameritrade":
            resp = await http.post(emu.http_url("/v1/oauth2/token"), data={
                "grant_type": "refresh_token", "refresh_token": refresh, "client_id": f"{client_id}@AMER.OAUTHAP"})
        else:
            basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
            resp = await http.post(emu.http_url("/v1/oauth/token"), headers={"Authorization": f"Basic {basic}"},
                                   data={"grant_type": "refresh_token", "refresh_token": refresh})
        resp.body = await resp.json()
        return resp


async def discovery(emu, access_token: str) -> tuple[int, dict]:
    path = "/v1/userprincipals?fields=streamerSubscriptionKeys,streamerConnectionInfo" \
        if emu.flavour == "tdameritrade" else "/trader/v1/userPreference"
    async with aiohttp.ClientSession() as http:
        async with http.get(emu.http_url(path), headers={"Authorization": f"Bearer {access_token}"}) as resp:
            return resp.status, await resp.json()


class StreamerClient:
    """One connection; ``frames`` keeps every frame received, parsed when it is JSON."""

    def __init__(self, emu, access_token: str, discovered: dict) -> None:
        self.emu, self.access_token, self.info = emu, access_token, discovered
        self.ws = None
        self.request_id = 0
        self.frames: list = []

    @classmethod
    async def connect(cls, emu, access_token: str | None = None) -> "StreamerClient":
        if access_token is None:
            access_token = (await fetch_token(emu)).body["access_token"]
        status, body = await discovery(emu, access_token)
        assert status == 200, body
        self = cls(emu, access_token, body)
        if emu.flavour == "tdameritrade":
            url = f"ws://{body['streamerInfo']['streamerSocketUrl']}/ws"   # a bare host, as TDA gave it
        else:
            url = body["streamerInfo"][0]["streamerSocketUrl"]
        self.ws = await websockets.connect(url, compression="deflate", max_size=None, max_queue=None)
        return self

    def identity(self) -> dict:
        if self.emu.flavour == "tdameritrade":
            return {"account": self.info["accounts"][0]["accountId"], "source": self.info["streamerInfo"]["appId"]}
        si = self.info["streamerInfo"][0]
        return {"SchwabClientCustomerId": si["schwabClientCustomerId"], "SchwabClientCorrelId": si["schwabClientCorrelId"]}

    def login_request(self, **override) -> dict:
        if self.emu.flavour == "tdameritrade":
            si, acct = self.info["streamerInfo"], self.info["accounts"][0]
            stamp = int(datetime.strptime(si["tokenTimestamp"], "%Y-%m-%dT%H:%M:%S%z").timestamp() * 1000)
            values = {"userid": acct["accountId"], "token": si["token"], "company": acct["company"],
                      "segment": acct["segment"], "cddomain": acct["accountCdDomainId"], "usergroup": si["userGroup"],
                      "accesslevel": si["accessLevel"], "authorized": "Y", "timestamp": stamp,
                      "appid": si["appId"], "acl": si["acl"], **override}
            params = {"credential": urlencode({k: values[k] for k in CREDENTIAL_ORDER if k in values}),
                      "token": values["token"], "version": "1.0"}
        else:
            si = self.info["streamerInfo"][0]
            params = {"Authorization": override.get("token", self.access_token),
                      "SchwabClientChannel": si["schwabClientChannel"], "SchwabClientFunctionId": si["schwabClientFunctionId"]}
        return params

    async def request(self, service: str, command: str, parameters: dict | None = None, **extra) -> str:
        rid = str(self.request_id)
        self.request_id += 1
        req = {"service": service, "requestid": rid, "command": command, **self.identity(),
               "parameters": parameters or {}, **extra}
        await self.ws.send(json.dumps({"requests": [req]}))
        return rid

    async def login(self, **override) -> dict:
        rid = await self.request("ADMIN", "LOGIN", self.login_request(**override))
        return await self.response(rid)

    async def subscribe(self, service: str, keys: str, fields: str | None = None, command: str = "SUBS") -> dict:
        params = {"keys": keys} if fields is None else {"keys": keys, "fields": fields}
        return await self.response(await self.request(service, command, params))

    async def recv(self, timeout: float = 3.0):
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        try:
            frame = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            frame = {"garbage": raw}
        self.frames.append(frame)
        return frame

    async def response(self, rid: str | None = None, timeout: float = 3.0) -> dict:
        """The next ``response`` entry (with this requestid when given); other frames are kept."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            for entry in frame.get("response", []) if isinstance(frame, dict) else []:
                if rid is None or entry["requestid"] == rid:
                    return entry

    async def collect(self, seconds: float, until=None) -> list:
        """Frames received during ``seconds`` (or until ``until(frames)`` is true); stops at a close."""
        got, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                got.append(await self.recv(deadline - time.monotonic()))
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                break
            if until and until(got):
                break
        return got

    async def close(self) -> None:
        await self.ws.close()


def data_records(frames: list, service: str | None = None) -> list[dict]:
    """Every content record of the ``data`` frames, tagged with ``_service``."""
    out = []
    for frame in frames:
        for entry in frame.get("data", []) if isinstance(frame, dict) else []:
            if service is None or entry["service"] == service:
                out.extend({**rec, "_service": entry["service"]} for rec in entry["content"])
    return out
