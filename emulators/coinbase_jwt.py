"""JWT checks of the Coinbase Advanced Trade emulator (the server side of CDP API keys).

A client puts a fresh JWT into each ``subscribe``/``unsubscribe`` message; decoded it reads::

    header  {"alg":"ES256","kid":"organizations/o1/apiKeys/k1","nonce":"5f0c...","typ":"JWT"}
    payload {"sub":"organizations/o1/apiKeys/k1","iss":"cdp","nbf":1718996300,"exp":1718996420}

:class:`JwtVerifier` accepts ES256 (P-256) and EdDSA (Ed25519). With public keys
configured the signature must verify against one of them; without, any well-formed JWT
(right algorithm, right signature length, valid claims) passes. Every rejection raises
:class:`JwtRejected` with the reason, which the emulator journals; the client only ever
sees Coinbase's ``authentication failure``.
"""

from __future__ import annotations

import base64
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

ALGORITHMS = ("ES256", "EdDSA")
SIGNATURE_BYTES = 64  # r||s for ES256, the Ed25519 signature for EdDSA


class JwtRejected(ValueError):
    """The JWT is missing, malformed, expired, not yet valid or signed by an unknown key."""


def load_public_keys(pem_text: str) -> list:
    """Every PEM public key in ``pem_text`` (P-256 or Ed25519), in order."""
    keys, marker = [], "-----END PUBLIC KEY-----"
    for block in pem_text.split(marker):
        if "-----BEGIN PUBLIC KEY-----" not in block:
            continue
        key = serialization.load_pem_public_key((block.strip() + "\n" + marker + "\n").encode())
        if not isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
            raise ValueError(f"unsupported public key type {type(key).__name__}; expected P-256 or Ed25519")
        keys.append(key)
    if not keys:
        raise ValueError("no '-----BEGIN PUBLIC KEY-----' block found")
    return keys


class JwtVerifier:
    """Checks one WebSocket JWT at a time; ``verify(token)`` returns the claims or raises."""

    def __init__(self, public_keys: list | None = None, key_name: str | None = None,
                 max_lifetime_s: float = 120.0, leeway_s: float = 0.0) -> None:
        self.public_keys = public_keys or []
        self.key_name = key_name
        self.max_lifetime_s = max_lifetime_s
        self.leeway_s = leeway_s

    def verify(self, token: object, now: float | None = None) -> dict:
        if not isinstance(token, str) or token.count(".") != 2:
            raise JwtRejected("jwt is not a compact JWS string")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise JwtRejected(f"jwt header unreadable: {exc}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise JwtRejected(f"jwt alg {alg!r} not accepted (ES256 or EdDSA)")
        if not isinstance(kid, str) or not kid:
            raise JwtRejected("jwt header has no kid")
        if self.key_name is not None and kid != self.key_name:
            raise JwtRejected("jwt kid is not the configured key name")
        claims = self._decode(token, alg)
        self._check_claims(claims, kid, time.time() if now is None else now)
        return claims

    def _decode(self, token: str, alg: str) -> dict:
        if not self.public_keys:
            if len(_b64(token.rsplit(".", 1)[1])) != SIGNATURE_BYTES:
                raise JwtRejected(f"jwt signature is not a {SIGNATURE_BYTES}-byte {alg} signature")
            try:
                return jwt.decode(token, options={"verify_signature": False})
            except jwt.PyJWTError as exc:
                raise JwtRejected(f"jwt payload unreadable: {exc}") from None
        wanted = ed25519.Ed25519PublicKey if alg == "EdDSA" else ec.EllipticCurvePublicKey
        for key in self.public_keys:
            if not isinstance(key, wanted):
                continue
            try:
                return jwt.decode(token, key, algorithms=[alg],
                                  options={"verify_exp": False, "verify_nbf": False, "verify_iat": False})
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise JwtRejected(f"jwt invalid: {exc}") from None
        raise JwtRejected(f"jwt {alg} signature matches no configured public key")

    def _check_claims(self, claims: dict, kid: str, now: float) -> None:
        if claims.get("iss") != "cdp":
            raise JwtRejected(f"jwt iss must be 'cdp', got {claims.get('iss')!r}")
        if claims.get("sub") != kid:
            raise JwtRejected("jwt sub differs from kid")
        nbf, exp = claims.get("nbf"), claims.get("exp")
        if not _is_number(nbf) or not _is_number(exp):
            raise JwtRejected("jwt needs numeric nbf and exp claims")
        if nbf > now + self.leeway_s:
            raise JwtRejected("jwt not yet valid (nbf in the future)")
        if exp <= now - self.leeway_s:
            raise JwtRejected("jwt expired")
        if exp - nbf > self.max_lifetime_s:
            raise JwtRejected(f"jwt lifetime {exp - nbf}s exceeds {self.max_lifetime_s:g}s")


def _b64(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except ValueError:
        return b""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
