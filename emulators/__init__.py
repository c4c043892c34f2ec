"""Feed emulators: real servers on loopback speaking each provider's protocol.

``load(provider)`` returns the emulator class for a provider id. Each class takes
:class:`~tickpipe.emulators.base.EmulatorOptions`; its ``settings_class`` (section
``emulator_<provider>``) holds the credentials it enforces when they are configured.
"""

from __future__ import annotations

from tickpipe.registry import lookup

EMULATORS = {
    "alpaca": "tickpipe.emulators.alpaca:AlpacaEmulator",
    "tdameritrade": "tickpipe.emulators.tdameritrade:TDAmeritradeEmulator",
    "schwab": "tickpipe.emulators.tdameritrade:SchwabEmulator",
    "coinbase": "tickpipe.emulators.coinbase:CoinbaseEmulator",
    "coinbase-exchange": "tickpipe.emulators.coinbase_exchange:CoinbaseExchangeEmulator",
    "financefeast": "tickpipe.emulators.financefeast:FinancefeastEmulator",
    "marketprophit": "tickpipe.emulators.marketprophit:MarketProphitEmulator",
}


def load(provider: str):
    return lookup(EMULATORS, provider, "emulator")
