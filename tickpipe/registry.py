"""``"module:attribute"`` references: how emulators, adapters and normalizers are registered by provider id."""

from __future__ import annotations

import importlib
from typing import Any


class NotInstalled(LookupError):
    """The registry names a module or attribute that does not exist (yet)."""


def resolve(target: str) -> Any:
    """Import ``module:attribute``; :class:`NotInstalled` if the module itself or the attribute is missing
    (an import error inside an existing module is a bug and propagates)."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise NotInstalled(f"{module_name} does not exist yet") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise NotInstalled(f"{module_name} has no {attr}") from None


def lookup(table: dict[str, str], provider: str, what: str) -> Any:
    """``resolve(table[provider])``; ``ValueError`` for an unknown provider id."""
    if provider not in table:
        raise ValueError(f"unknown provider '{provider}'; known: {', '.join(table)}")
    try:
        return resolve(table[provider])
    except NotInstalled as exc:
        raise NotInstalled(f"no {what} for '{provider}' yet ({exc})") from None
