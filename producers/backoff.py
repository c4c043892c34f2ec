"""Reconnect delays: capped exponential backoff with full jitter, and the slow pace after auth failures."""

from __future__ import annotations

import random


def full_jitter(failures: int, initial_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """A delay drawn uniformly from ``[0, min(cap, initial * 2**failures)]`` (failures counted from 0)."""
    ceiling = min(cap_s, initial_s * 2 ** min(max(failures, 0), 62))
    return (rng or random).uniform(0.0, ceiling)


def auth_retry_delay(failures: int, minimum_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """After the ``failures``-th refused login in a row (from 1): uniform in ``[minimum, min(cap, minimum * 2**(failures-1))]``.

    Never below ``minimum_s``, so wrong credentials can never become a tight loop.
    """
    ceiling = max(minimum_s, min(cap_s, minimum_s * 2 ** min(max(failures - 1, 0), 62)))
    return (rng or random).uniform(minimum_s, ceiling)
