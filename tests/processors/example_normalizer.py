"""The worked example of ``tickpipe/processors/normalizers/base.py`` (run from its docstring), plus a stateful one.

Tests register them under provider ids of their own choosing (``Pipeline(provider, normalize)``).
"""

import textwrap

from tickpipe.processors.normalizers import base
from tickpipe.processors.normalizers.base import Frame
from tickpipe.processors.normalizers.convert import dec


def _worked_example():
    """Exec the code block of base.py's "Worked example" section: the docs are what we test."""
    doc = base.__doc__
    block = doc[doc.index("Worked example"):doc.index("which yields one")]
    code = textwrap.dedent(block[block.index("::") + 2:])
    namespace: dict = {}
    exec(compile(code, "base.py worked example", "exec"), namespace)
    return namespace["normalize"]


normalize = _worked_example()


def normalize_merging(frame: Frame) -> None:
    """Sparse level-one deltas merged per key: ``{"key":"MSFT","1":417.01,"2":417.08}``."""
    delta = frame.json()
    key = delta.pop("key")
    merged = {**(frame.recall(key) or {}), **delta}
    frame.remember(key, merged)
    frame.record("level1", key, channel="QUOTE", bid_price=dec(merged["1"]) if "1" in merged else None,
                 ask_price=dec(merged["2"]) if "2" in merged else None)
