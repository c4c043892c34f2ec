"""Producers: one thin process per provider connection (``tickpipe produce <provider>``).

``load(provider)`` returns the adapter class of a provider id; the adapter contract is
documented in :mod:`tickpipe.producers.base`, the shared loop in :mod:`.loop`, the Kafka
sink in :mod:`.sink`, resync requests in :mod:`.control`, and :class:`.runner.Producer`
puts them together.
"""

from __future__ import annotations

from tickpipe.registry import lookup

ADAPTERS = {
    "alpaca": "tickpipe.producers.alpaca:AlpacaAdapter",
    "tdameritrade": "tickpipe.producers.tdameritrade:TDAmeritradeAdapter",
    "schwab": "tickpipe.producers.tdameritrade:SchwabAdapter",
    "coinbase": "tickpipe.producers.coinbase:CoinbaseAdapter",
    "coinbase-exchange": "tickpipe.producers.coinbase_exchange:CoinbaseExchangeAdapter",
    "financefeast": "tickpipe.producers.financefeast:FinancefeastAdapter",
    "marketprophit": "tickpipe.producers.marketprophit:MarketProphitAdapter",
}


def load(provider: str):
    """The adapter class for ``provider``; ``ValueError`` for an unknown id, ``LookupError`` if not written yet."""
    return lookup(ADAPTERS, provider, "producer adapter")
