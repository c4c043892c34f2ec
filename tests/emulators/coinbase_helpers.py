"""Helpers for the Coinbase Advanced Trade emulator tests: keys, JWTs, a running emulator, a client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time

import jwt
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tickpipe.config import Secret
from tickpipe.emulators.base import EmulatorOptions
from tickpipe.emulators.coinbase import CoinbaseEmulator, CoinbaseEmulatorSettings
from tickpipe.emulators.faults import FaultPlan

KEY_NAME = "organizations/org-test/apiKeys/key-test"


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_pem(*keys) -> str:
    return "".join(k.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode() for k in keys)


def sec1_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """The legacy CDP key format: ``-----BEGIN EC PRIVATE KEY-----``."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def ed_raw_b64(key: ed25519.Ed25519PrivateKey) -> str:
    """The CDP portal's Ed25519 format: base64 of seed || public key."""
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed + pub).decode()


def make_jwt(key, kid: str = KEY_NAME, *, sub: str | None = None, iss: str = "cdp", nbf: float | None = None,
             lifetime: int = 120) -> str:
    alg = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
    now = int(time.time()) if nbf is None else int(nbf)
    claims = {"sub": sub or kid, "iss": iss, "nbf": now, "exp": now + lifetime}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "nonce": secrets.token_hex()})


def settings(**kw) -> CoinbaseEmulatorSettings:
    for name in ("key_name", "public_keys"):
        if isinstance(kw.get(name), str):
            kw[name] = Secret(kw[name])
    return CoinbaseEmulatorSettings(**kw)


@contextlib.asynccontextmanager
async def emulator(faults: str = "", rate: float = 50, seed: int = 1, journal=None, **settings_kw):
    options = EmulatorOptions(seed=seed, rate=rate, faults=FaultPlan.parse(faults),
                              journal=str(journal) if journal else None, credentials=settings(**settings_kw))
    async with CoinbaseEmulator(options) as emu:
        yield emu


def sub(channel: str, products=None, token: str | None = None, kind: str = "subscribe") -> str:
    doc = {"type": kind, "channel": channel}
    if products is not None:
        doc["product_ids"] = products
    if token is not None:
        doc["jwt"] = token
    return json.dumps(doc)


async def recv(ws, timeout: float = 3.0):
    """The next frame, JSON-decoded when it is JSON (else the raw text/bytes)."""
    raw = await asyncio.wait_for(ws.recv(), timeout)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw


async def recv_until(ws, predicate, timeout: float = 3.0, limit: int = 10_000) -> list:
    """Frames up to and including the first one that satisfies ``predicate``."""
    out = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(out) < limit:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise AssertionError(f"no matching frame within {timeout}s; last frames: {out[-3:]}")
        frame = await recv(ws, left)
        out.append(frame)
        if predicate(frame):
            return out
    raise AssertionError("frame limit reached")


def connect(emu, path: str = "/"):
    return websockets.connect(emu.ws_url(path), max_size=10 * 1024 * 1024, close_timeout=1)


def is_error(frame) -> bool:
    return isinstance(frame, dict) and frame.get("type") == "error"
