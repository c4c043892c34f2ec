"""Known credentials for every provider: the emulator enforces them, the producer is given them.

Each value is distinctive, so finding it anywhere (a log line, a metric, a DLQ record, an
alert, an exception text) is a leak. ``wrong=True`` gives the producer a wrong value of the
same shape, so the emulator rejects it as the provider would.
"""

from __future__ import annotations

import base64
import urllib.parse

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

_EC_KEY = ec.generate_private_key(ec.SECP256R1())
_EC_OTHER = ec.generate_private_key(ec.SECP256R1())


def _pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


COINBASE_PRIVATE_PEM = _pem(_EC_KEY)
COINBASE_PUBLIC_PEM = _EC_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()
EXCHANGE_SECRET = base64.b64encode(b"hygiene-exchange-secret-" + bytes(range(40))).decode()

SECRETS = {
    "alpaca": {"key_id": "PKHYGIENE7Q2W9ZK4D1X", "secret_key": "hygSecretAlpaca0v9c8x7z6l5k4j3h2g1f0dSq"},
    "tdameritrade": {"client_id": "HYGIENETDCLIENT7788",   # TDA has no client secret
                     "refresh_token": "hygTdRefreshTokenQW12ER34TY56UI78"},
    "schwab": {"client_id": "HygieneSchwabAppKey99xyz", "client_secret": "hygSchwabSecret77bb",
               "refresh_token": "hygSchwabRefreshZX90CV87BN65"},
    "coinbase": {"key_name": "organizations/hyg-org-0451/apiKeys/hyg-key-9q8w"},
    "coinbase-exchange": {"api_key": "hygexchangekey0123456789abcdef01", "api_secret": EXCHANGE_SECRET,
                          "passphrase": "hygPassphrase42"},
    "financefeast": {"token": "pk_hygieneFinancefeastToken0451xyz"},
    "marketprophit": {"secret_key": "sk_live_HyGiEnE0451qwertyASDF99Z", "jwt_signing_key": "hyg-mp-jwt-hmac-key-0451"},
}


def _wrong(value: str) -> str:
    """A value of the same shape that is not the right one."""
    return value[:-4] + ("WXYZ" if not value.endswith("WXYZ") else "ABCD")


def _wrong_exchange_secret() -> str:
    return base64.b64encode(b"wrong" + base64.b64decode(EXCHANGE_SECRET)[5:]).decode()


def emulator_env(provider: str) -> dict[str, str]:
    """``TICKPIPE_EMULATOR_<SECTION>_*``: the credentials the emulator enforces."""
    s, p = SECRETS[provider], "TICKPIPE_EMULATOR_" + provider.upper().replace("-", "_") + "_"
    if provider == "coinbase":
        return {p + "KEY_NAME": s["key_name"], p + "PUBLIC_KEYS": COINBASE_PUBLIC_PEM}
    return {p + name.upper(): value for name, value in s.items()}


def producer_env(provider: str, wrong: bool = False) -> dict[str, str]:
    """``TICKPIPE_<SECTION>_*``: the credentials the producer uses (wrong ones with ``wrong``)."""
    s, p = SECRETS[provider], "TICKPIPE_" + provider.upper().replace("-", "_") + "_"
    if provider == "coinbase":
        return {p + "KEY_NAME": s["key_name"], p + "PRIVATE_KEY": _pem(_EC_OTHER) if wrong else COINBASE_PRIVATE_PEM}
    if provider == "coinbase-exchange":   # a signed channel, so the signature is checked
        secret = _wrong_exchange_secret() if wrong else s["api_secret"]
        return {p + "API_KEY": s["api_key"], p + "API_SECRET": secret, p + "PASSPHRASE": s["passphrase"],
                p + "CHANNELS": "level2,matches,ticker"}
    if provider in ("tdameritrade", "schwab"):
        env = {p + name.upper(): value for name, value in s.items()}
        if wrong:
            env[p + "REFRESH_TOKEN"] = _wrong(s["refresh_token"])
        return {**env, p + "ACCESS_TOKEN": None}   # None: unset the placeholder token
    if provider == "marketprophit":
        return {p + "SECRET_KEY": _wrong(s["secret_key"]) if wrong else s["secret_key"]}
    names = {"alpaca": ("key_id", "secret_key"), "financefeast": ("token",)}[provider]
    return {p + n.upper(): (_wrong(s[n]) if wrong and n == names[-1] else s[n]) for n in names}


def secret_forms() -> dict[str, str]:
    """Every configured secret value, and the forms it could travel in (URL-quoted; each line
    of the PEM body): name -> text to look for."""
    out = {}
    for provider, values in SECRETS.items():
        for name, value in values.items():
            out[f"{provider}.{name}"] = value
            if urllib.parse.quote(value, safe="") != value:
                out[f"{provider}.{name} (url-quoted)"] = urllib.parse.quote(value, safe="")
            out[f"{provider}.{name} (the wrong one)"] = _wrong(value)
    for label, pem in (("", COINBASE_PRIVATE_PEM), (" (the wrong one)", _pem(_EC_OTHER))):
        for i, line in enumerate(pem.splitlines()):
            if len(line) >= 16 and "-----" not in line:
                out[f"coinbase.private_key line {i}{label}"] = line
    out["coinbase-exchange.api_secret (the wrong one)"] = _wrong_exchange_secret()
    return out


def leaks(text: str | bytes) -> list[str]:
    """Names of the secrets found in ``text``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [name for name, value in secret_forms().items() if value in text]
