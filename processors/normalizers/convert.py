"""Value conversions every provider normalizer needs: decimal text, times, symbols.

All of them raise :class:`NormalizeError` (a dead letter, never a crash) on bad input.
"""

from __future__ import annotations

import datetime as _dt
import functools
import re
from decimal import Decimal
from typing import Any

from tickpipe.processors.normalizers.errors import NormalizeError

_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1
_DECIMAL = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_PAIR = re.compile(r"[A-Z0-9]+/[A-Z0-9]+")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_DECIMALS_SEEN: set[str] = set()   # prices and sizes repeat: the syntax check once per text


def dec(value: Any, field: str = "value") -> str:
    """The provider's exact decimal text for a price/size.

    * ``str`` (Coinbase, Market Prophit, and JSON numbers read with ``Frame.json()``, which
      keeps a float's literal text): returned as is after a syntax check;
    * ``int``: its digits; ``float`` (only from binary formats such as msgpack, where no text
      exists): the shortest text that reads back as the same double (``repr``);
    * ``Decimal``: its text. ``bool``, ``None`` and anything else is a :class:`NormalizeError`.
    """
    kind = type(value)
    if kind is str:
        if value in _DECIMALS_SEEN:
            return value
        if _DECIMAL.fullmatch(value):
            if len(_DECIMALS_SEEN) >= 8192:
                _DECIMALS_SEEN.clear()
            _DECIMALS_SEEN.add(value)
            return value
        raise NormalizeError(f"{field}: {value[:40]!r} is not a decimal number")
    if kind is int:
        return str(value)
    if kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise NormalizeError(f"{field}: {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, Decimal) and value.is_finite():
        return str(value)
    if isinstance(value, str):  # a str subclass (e.g. from a parse_float hook)
        return dec(str(value), field)
    raise NormalizeError(f"{field}: expected a number, got {kind.__name__}")


def dec_or_none(value: Any, field: str = "value") -> str | None:
    """:func:`dec`, but ``None`` (and an empty string) stay ``None``."""
    if value is None or value == "":
        return None
    return dec(value, field)


def _check_ns(ns: int, field: str) -> int:
    if not _NS_MIN <= ns <= _NS_MAX:
        raise NormalizeError(f"{field}: time out of the representable range")
    return ns


def rfc3339_ns(text: Any, field: str = "time") -> int:
    """Epoch nanoseconds of an RFC 3339 / ISO 8601 time with 0-9 fractional digits.

    ``"2021-02-22T15:51:45.335689322Z"`` -> 1614009105335689322. A time without a zone
    is read as UTC. Keeps all nine digits (``datetime`` alone would stop at micros).
    """
    last = _LAST_TIME
    if text == last[0] and type(text) is str:   # a frame's items often share one stamp
        return last[1]
    if type(text) is not str or len(text) < 19:
        raise NormalizeError(f"{field}: {str(text)[:40]!r} is not an RFC 3339 time")
    try:
        base, frac, zone = text[:19], 0, text[19:]
        if zone.startswith("."):
            if zone.isascii():  # isdigit() is 0-9 here
                tail = zone[1:].lstrip("0123456789")
                end = len(zone) - len(tail)
            else:
                end = 1
                while end < len(zone) and zone[end].isdigit():
                    end += 1
            digits = zone[1:end]
            if not digits or len(digits) > 9:
                raise ValueError
            frac, zone = int(digits.ljust(9, "0")), zone[end:]
        key = base + zone   # base is 19 characters: no two (base, zone) pairs share a key
        seconds = _SECONDS.get(key)
        if seconds is None:
            seconds = _epoch_seconds(base, zone)
            if len(_SECONDS) >= 4096:
                _SECONDS.clear()
            _SECONDS[key] = seconds
        ns = seconds * 1_000_000_000 + frac
    except ValueError:
        raise NormalizeError(f"{field}: {text[:40]!r} is not an RFC 3339 time") from None
    return _remember_time(text, _check_ns(ns, field))


def _remember_time(text: str, ns: int) -> int:
    global _LAST_TIME
    _LAST_TIME = (text, ns)
    return ns


_LAST_TIME: tuple[str | None, int] = (None, 0)   # the last time converted
_SECONDS: dict[str, int] = {}   # date-time to the second + zone -> epoch seconds (feeds repeat them)


def _epoch_seconds(base: str, zone: str) -> int:
    moment = _dt.datetime.fromisoformat(base + (zone if zone not in ("", "Z", "z") else "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    delta = moment - _EPOCH
    return delta.days * 86400 + delta.seconds


def ms_ns(value: Any, field: str = "time") -> int:
    """Epoch nanoseconds from epoch milliseconds (a number or its text)."""
    return _scaled(value, 1_000_000, field)


def s_ns(value: Any, field: str = "time") -> int:
    """Epoch nanoseconds from epoch seconds (a number or decimal text such as ``"1688998200"``
    or ``"1772460371.299000"``), exact to the nanosecond."""
    return _scaled(value, 1_000_000_000, field)


def _scaled(value: Any, factor: int, field: str) -> int:
    kind = type(value)
    try:
        if kind is int:
            ns = value * factor
        elif kind is float:
            ns = int(Decimal(repr(value)) * factor)
        elif isinstance(value, str) and _DECIMAL.fullmatch(value):
            ns = int(Decimal(value) * factor)
        else:
            raise ValueError
    except (ValueError, ArithmeticError):
        raise NormalizeError(f"{field}: {str(value)[:40]!r} is not an epoch time") from None
    return _check_ns(ns, field)


def text(value: Any) -> str | None:
    """Any scalar as text for a ``fields``/``values`` map (``None`` stays ``None``);
    booleans become ``true``/``false``, numbers keep their text as :func:`dec` does."""
    if value is None:
        return None
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is float:
        return repr(value)
    return str(value)


@functools.lru_cache(maxsize=1 << 16)
def normalize_symbol(provider_symbol: str) -> str:
    """The normalized instrument: trimmed, upper case; a ``BASE/QUOTE`` pair becomes
    ``BASE-QUOTE`` (``BTC/USD`` and ``BTC-USD`` agree); everything else is kept
    (``/ESU24``, ``NZC.NZ``, ``GOOG  240517C00070000`` keeps its inner spaces)."""
    symbol = provider_symbol.strip().upper()
    if _PAIR.fullmatch(symbol):
        return symbol.replace("/", "-")
    return symbol
