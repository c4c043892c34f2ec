"""OAuth tokens, the REST bodies that lead to the streamer, and LOGIN validation (TDA and Schwab).

Tokens are random strings the emulator issues with a lifetime (``token_expiry`` fault, else
30 minutes). With credentials configured only issued (or configured) tokens pass; without,
any well-formed token passes, except one this emulator issued that has expired, so token
expiry is testable either way. A TDA LOGIN looks like::

    {"service": "ADMIN", "requestid": "0", "command": "LOGIN", "account": "123456789", "source": "myappid01",
     "parameters": {"credential": "userid=123456789&token=0123...&company=AMER&...&acl=AKBP",
                    "token": "0123...", "version": "1.0"}}
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qs

TDA_CREDENTIAL_KEYS = ("userid", "token", "company", "segment", "cddomain", "usergroup", "accesslevel",
                       "authorized", "timestamp", "appid", "acl")
DENIED = "Login Denied.: token is invalid or has expired."


class LoginDenied(Exception):
    """A LOGIN that the server answers with code 3 (message in ``args[0]``)."""


@dataclass
class Identity:
    """Who the emulated account is: ids the REST calls hand out and LOGIN must repeat."""
    account_id: str
    customer_id: str
    correl_id: str
    app_id: str = "tickpipe01"
    acl: str = "AKBPCCCNDRESGFGKQSTFXNPNQUWQ"
    channel: str = "N9"
    function_id: str = "APIAPP"


class TokenStore:
    """Access, refresh and streamer tokens this emulator issued, with their expiry."""

    def __init__(self, lifetime_s: float, static: tuple[str, ...] = ()) -> None:
        self.lifetime_s = lifetime_s
        self.static = {s for s in static if s}
        self._expiry: dict[str, float] = {}

    def issue(self, kind: str, lifetime_s: float | None = None) -> str:
        token = f"{kind}-{secrets.token_hex(20)}"
        self._expiry[token] = time.monotonic() + (lifetime_s if lifetime_s is not None else self.lifetime_s)
        return token

    def state(self, token: str) -> str:
        """``valid``, ``expired`` or ``unknown``."""
        if token in self.static:
            return "valid"
        expiry = self._expiry.get(token)
        if expiry is None:
            return "unknown"
        return "valid" if time.monotonic() < expiry else "expired"

    def accepts(self, token: str, strict: bool) -> bool:
        """Strict (credentials configured): only live issued tokens; else anything non-empty but expired ones."""
        state = self.state(token)
        return state == "valid" or (not strict and state == "unknown" and bool(token))


def principals_body(ident: Identity, socket_host: str, streamer_token: str, subscription_key: str) -> dict:
    """TDA ``GET /v1/userprincipals`` reply (the parts clients use)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+0000")
    return {
        "userId": "tickpipe", "accessLevel": "CUS",
        "streamerInfo": {"streamerBinaryUrl": socket_host, "streamerSocketUrl": socket_host, "token": streamer_token,
                         "tokenTimestamp": stamp, "userGroup": "ACCT", "accessLevel": "ACCT", "acl": ident.acl,
                         "appId": ident.app_id},
        "streamerSubscriptionKeys": {"keys": [{"key": subscription_key}]},
        "accounts": [{"accountId": ident.account_id, "accountCdDomainId": f"A0000000{ident.account_id[-8:]:0>8}",
                      "company": "AMER", "segment": "AMER", "acl": ident.acl,
                      "authorizations": {"streamerAccess": True, "levelTwoQuotes": True}}],
    }


def preferences_body(ident: Identity, socket_url: str) -> dict:
    """Schwab ``GET /trader/v1/userPreference`` reply."""
    return {
        "accounts": [{"accountNumber": ident.account_id, "primaryAccount": True, "type": "BROKERAGE",
                      "nickName": "Individual", "displayAcctId": f"...{ident.account_id[-3:]}",
                      "autoPositionEffect": False, "accountColor": "Green"}],
        "streamerInfo": [{"streamerSocketUrl": socket_url, "schwabClientCustomerId": ident.customer_id,
                          "schwabClientCorrelId": ident.correl_id, "schwabClientChannel": ident.channel,
                          "schwabClientFunctionId": ident.function_id}],
        "offers": [{"level2Permissions": True, "mktDataPermission": "NP"}],
    }


def new_identity(seed: int, account_id: str | None, customer_id: str | None) -> Identity:
    rng_hex = f"{seed * 2654435761 % (1 << 64):016x}"
    return Identity(account_id=account_id or f"{seed % 900000000 + 100000000}",
                    customer_id=customer_id or (rng_hex * 4)[:64],
                    correl_id=str(uuid.UUID(int=seed * 0x9E3779B97F4A7C15 % (1 << 128), version=4)))


def check_tda_login(req: dict, tokens: TokenStore, ident: Identity, strict: bool) -> str:
    """Validate a TDA LOGIN; return the user id (for the one-session rule) or raise LoginDenied."""
    params = req.get("parameters")
    if not isinstance(params, dict) or not isinstance(params.get("credential"), str):
        raise LoginDenied("Login Denied.: missing credential")
    cred = {k: v[0] for k, v in parse_qs(params["credential"], keep_blank_values=True).items()}
    missing = [k for k in TDA_CREDENTIAL_KEYS if k not in cred]
    if missing:
        raise LoginDenied(f"Login Denied.: credential lacks {','.join(missing)}")
    if not cred["timestamp"].isdigit():
        raise LoginDenied("Login Denied.: credential timestamp is not epoch milliseconds")
    if params.get("token") != cred["token"] or req.get("account") != cred["userid"]:
        raise LoginDenied("Login Denied.: token/account mismatch")
    if not tokens.accepts(cred["token"], strict):
        raise LoginDenied(DENIED)
    if strict and (cred["userid"] != ident.account_id or req.get("source") != ident.app_id):
        raise LoginDenied("Login Denied.: unknown user or application")
    return cred["userid"]


def check_schwab_login(req: dict, tokens: TokenStore, ident: Identity, strict: bool) -> str:
    """Validate a Schwab LOGIN; return the customer id (for the one-session rule) or raise LoginDenied."""
    params = req.get("parameters")
    if not isinstance(params, dict):
        raise LoginDenied("Login Denied.: missing parameters")
    token = params.get("Authorization")
    customer, correl = req.get("SchwabClientCustomerId"), req.get("SchwabClientCorrelId")
    if not all(isinstance(v, str) and v for v in (token, customer, correl, params.get("SchwabClientChannel"),
                                                   params.get("SchwabClientFunctionId"))):
        raise LoginDenied("Login Denied.: Authorization, SchwabClientCustomerId, SchwabClientCorrelId, "
                          "SchwabClientChannel and SchwabClientFunctionId are required")
    if not tokens.accepts(token, strict):
        raise LoginDenied(DENIED)
    if strict and customer != ident.customer_id:
        raise LoginDenied("Login Denied.: unknown customer id")
    return customer
