"""Sequence integrity: gaps, out-of-order, duplicates, resets, staleness — detected, healed, alerted."""
