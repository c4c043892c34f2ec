"""Provider normalizers, one per provider id (see ``base.py`` for how to write one)."""

from __future__ import annotations

from tickpipe.registry import NotInstalled, resolve

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


def parse_overrides(text: str) -> dict[str, str]:
    """``"financefeast=my.module:normalize,alpaca=..."`` -> {provider: "module:callable"}."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        provider, _, target = item.partition("=")
        if not target or ":" not in target:
            raise ValueError(f"expected provider=module:callable, got {item!r}")
        out[provider.strip()] = target.strip()
    return out


def load_normalizer(provider: str, overrides: dict[str, str] | None = None) -> Normalizer:
    """The normalizer function of ``provider`` (``overrides`` win over :data:`NORMALIZERS`)."""
    target = (overrides or {}).get(provider) or NORMALIZERS.get(provider)
    if target is None:
        raise NormalizerMissing(f"no normalizer registered for provider {provider!r}")
    try:
        return resolve(target)
    except NotInstalled as exc:
        raise NormalizerMissing(f"normalizer for {provider!r}: {exc}") from None


def available_providers(overrides: dict[str, str] | None = None) -> list[str]:
    """Provider ids whose normalizer can be loaded."""
    out = []
    for provider in NORMALIZERS:
        try:
            load_normalizer(provider, overrides)
        except NormalizerMissing:
            continue
        out.append(provider)
    return out
