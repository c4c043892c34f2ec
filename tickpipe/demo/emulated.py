"""How to point each provider's producer at its emulator: one table, reused by the demo,
docker-compose's ``emulated`` profile and the reliability tests.

An emulator with no credentials configured accepts any well-formed ones, so the values
below are placeholders of the right shape (they are still passed as secrets and never
printed). ``producer_env(provider, port, host)`` gives the ``TICKPIPE_<SECTION>_*`` variables
of ``tickpipe produce <provider>`` (``host``: the emulator's address, e.g. a compose service
name); ``emulator_env(provider)`` the ``TICKPIPE_EMULATOR_<SECTION>_*`` variables of
``tickpipe emulate <provider>``.
"""

from __future__ import annotations

from typing import Callable

PLACEHOLDER = "demo0placeholder0credential00000"  # 32 alphanumerics and zeros: fits every token shape


def _alpaca(host: str, port: int) -> dict[str, str]:
    # JSON frames so `tickpipe tail raw.alpaca` is readable; trades are Alpaca's faultable messages.
    return {"TICKPIPE_ALPACA_KEY_ID": "PKDEMO", "TICKPIPE_ALPACA_SECRET_KEY": PLACEHOLDER,
            "TICKPIPE_ALPACA_URL": f"ws://{host}:{port}", "TICKPIPE_ALPACA_ENCODING": "json"}


def _streamer(section: str, subscriptions: str) -> Callable[[str, int], dict[str, str]]:
    prefix = f"TICKPIPE_{section.upper()}_"

    def env(host: str, port: int) -> dict[str, str]:
        return {prefix + "ACCESS_TOKEN": PLACEHOLDER, prefix + "API_URL": f"http://{host}:{port}",
                prefix + "STREAMER_SCHEME": "ws", prefix + "SUBSCRIPTIONS": subscriptions}
    return env


def _coinbase(host: str, port: int) -> dict[str, str]:
    return {"TICKPIPE_COINBASE_URL": f"ws://{host}:{port}"}   # no key: public channels


def _coinbase_exchange(host: str, port: int) -> dict[str, str]:
    return {"TICKPIPE_COINBASE_EXCHANGE_URL": f"ws://{host}:{port}",
            "TICKPIPE_COINBASE_EXCHANGE_REST_URL": f"http://{host}:{port}"}


def _financefeast(host: str, port: int) -> dict[str, str]:
    return {"TICKPIPE_FINANCEFEAST_TOKEN": "pk_" + PLACEHOLDER, "TICKPIPE_FINANCEFEAST_URL": f"ws://{host}:{port}/ws"}


def _marketprophit(host: str, port: int) -> dict[str, str]:
    return {"TICKPIPE_MARKETPROPHIT_SECRET_KEY": "sk_live_" + PLACEHOLDER[:24],
            "TICKPIPE_MARKETPROPHIT_URL": f"http://{host}:{port}"}


# One faultable key per streamer service family keeps every injected swap between two records
# of the same key (a swap across keys is invisible to a per-key sequence check).
PRODUCER_ENV: dict[str, Callable[[str, int], dict[str, str]]] = {
    "alpaca": _alpaca,
    "tdameritrade": _streamer("tdameritrade", "QUOTE=AAPL,MSFT;TIMESALE_EQUITY=AAPL"),
    "schwab": _streamer("schwab", "LEVELONE_EQUITIES=AAPL,MSFT;CHART_EQUITY=AAPL"),
    "coinbase": _coinbase,
    "coinbase-exchange": _coinbase_exchange,
    "financefeast": _financefeast,
    "marketprophit": _marketprophit,
}

# Emulator settings: streamer charts at one bar per second (market clock x60), frequent heartbeats.
EMULATOR_ENV: dict[str, dict[str, str]] = {
    "tdameritrade": {"TICKPIPE_EMULATOR_TDAMERITRADE_CLOCK_SPEED": "60", "TICKPIPE_EMULATOR_TDAMERITRADE_HEARTBEAT_S": "2"},
    "schwab": {"TICKPIPE_EMULATOR_SCHWAB_CLOCK_SPEED": "60", "TICKPIPE_EMULATOR_SCHWAB_HEARTBEAT_S": "2"},
}


def producer_env(provider: str, port: int, host: str = "127.0.0.1") -> dict[str, str]:
    """``TICKPIPE_<SECTION>_*`` for ``tickpipe produce <provider>`` against an emulator at ``host:port``."""
    return PRODUCER_ENV[provider](host, port)


def emulator_env(provider: str) -> dict[str, str]:
    return dict(EMULATOR_ENV.get(provider, {}))
