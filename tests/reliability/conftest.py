"""Reliability suite fixtures, and the figures it measured (printed at the end of the run)."""

from __future__ import annotations

from collections import Counter

import pytest

FIGURES: Counter = Counter()


@pytest.fixture(scope="session")
def figures() -> Counter:
    """Add measured figures here (``figures["bad inputs tried"] += n``); they are printed at the end."""
    return FIGURES


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Real frames of every provider, captured from its emulator (see ``support.capture_corpus``)."""
    from tests.reliability.support import capture_corpus

    return capture_corpus(tmp_path_factory.mktemp("corpus"))


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("reliability figures")
        for name, value in sorted(FIGURES.items()):
            terminalreporter.write_line(f"{name}: {value}")

