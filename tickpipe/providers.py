"""Provider ids: used in topic names, commands and configuration sections."""

PROVIDERS = ("alpaca", "tdameritrade", "schwab", "coinbase", "coinbase-exchange", "financefeast", "marketprophit")


def section_name(provider: str) -> str:
    """The configuration section of a provider: ``coinbase-exchange`` -> ``coinbase_exchange``."""
    return provider.replace("-", "_")
