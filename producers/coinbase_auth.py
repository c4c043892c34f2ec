"""CDP API key -> a fresh WebSocket JWT per Coinbase Advanced Trade subscribe message.

The JWT the producer signs (ES256 for an EC P-256 key, EdDSA for Ed25519), decoded::

    header  {"alg":"ES256","kid":"organizations/o1/apiKeys/k1","nonce":"<64 hex>","typ":"JWT"}
    payload {"sub":"organizations/o1/apiKeys/k1","iss":"cdp","nbf":1718996300,"exp":1718996420}

Accepted private keys, as the CDP portal issues them: SEC1 PEM (``BEGIN EC PRIVATE KEY``),
PKCS#8 PEM (``BEGIN PRIVATE KEY``, EC or Ed25519), or the base64 of a 32-byte Ed25519
seed or a 64-byte seed||public key. A key that fails to load is a :class:`ConfigError`
naming the setting, never showing the value.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tickpipe.config import ConfigError, Secret

JWT_LIFETIME_S = 120
KEY_SETTING = "TICKPIPE_COINBASE_PRIVATE_KEY"


def load_signing_key(text: str):
    """The private key in ``text`` and its JWT algorithm: ``(key, "ES256" | "EdDSA")``."""
    text = text.strip().replace("\\n", "\n")   # keys pasted into env vars often carry literal \n
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            raw = base64.b64decode("".join(text.split()), validate=True)
            if len(raw) not in (32, 64):
                raise ValueError(f"a raw Ed25519 key is 32 or 64 bytes, this one is {len(raw)}")
            key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    except (ValueError, TypeError, binascii.Error) as exc:
        why = str(exc).split(".")[0] if "bytes" in str(exc) else "not a PEM private key nor a base64 Ed25519 seed"
        raise ConfigError(f"{KEY_SETTING}: {why}") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key, "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ConfigError(f"{KEY_SETTING}: unsupported key type {type(key).__name__}; use EC P-256 or Ed25519")


class JwtSigner:
    """Signs one short-lived JWT per message with a CDP API key."""

    def __init__(self, key_name: Secret, private_key: Secret) -> None:
        self._key_name = key_name
        self._key, self.algorithm = load_signing_key(private_key.reveal())

    def __repr__(self) -> str:
        return f"JwtSigner(algorithm={self.algorithm!r})"

    def token(self, now: float | None = None) -> str:
        name = self._key_name.reveal()
        issued = int(time.time() if now is None else now)
        claims = {"sub": name, "iss": "cdp", "nbf": issued, "exp": issued + JWT_LIFETIME_S}
        return jwt.encode(claims, self._key, algorithm=self.algorithm,
                          headers={"kid": name, "nonce": secrets.token_hex()})
