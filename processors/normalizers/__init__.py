"""Provider normalizers, one per provider id (see ``base.py`` for how to write one)."""

from __future__ import annotations

import importlib

from tickpipe.processors.normalizers.base import Normalizer

# provider id -> "module:callable"; modules are imported on first use.
NORMALIZERS: dict[str, str] = {
    "alpaca": "tickpipe.processors.normalizers.alpaca:normalize",
    "tdameritrade": "tickpipe.processors.normalizers.tdameritrade:normalize_tdameritrade",
    "schwab": "tickpipe.processors.normalizers.tdameritrade:normalize_schwab",
    "coinbase": "tickpipe.processors.normalizers.coinbase:normalize",
    "coinbase-exchange": "tickpipe.processors.normalizers.coinbase_exchange:normalize",
    "financefeast": "tickpipe.processors.normalizers.financefeast:normalize",
    "marketprophit": "tickpipe.processors.normalizers.marketprophit:normalize",
}


class NormalizerMissing(LookupError):
    """No normalizer is registered for the provider, or its module is not there yet."""


def load_normalizer(provider: str) -> Normalizer:
    """The normalizer function of ``provider``."""
    try:
        target = NORMALIZERS[provider]
    except KeyError:
        raise NormalizerMissing(f"no normalizer registered for provider {provider!r}") from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise NormalizerMissing(f"normalizer module {module_name} for {provider!r} does not exist yet") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise NormalizerMissing(f"{module_name} has no {attr}") from None


def available_providers() -> list[str]:
    """Provider ids whose normalizer can be loaded."""
    out = []
    for provider in NORMALIZERS:
        try:
            load_normalizer(provider)
        except NormalizerMissing:
            continue
        out.append(provider)
    return out
