"""The collector's settings of the long-running processes (``tickpipe process``, ``tickpipe produce``).

Once a process is ready, :func:`settle_heap` collects once and freezes what start-up built
(modules, classes, the app, its clients: ``gc.freeze``), so later collections never walk it
again, and collects the youngest generation less often (``GEN0_THRESHOLD`` allocations
instead of 700: the hot paths allocate a few short-lived containers per record, nearly all
freed by reference counting, so frequent young collections find little). The pauses this
takes off the hot path are measured in BENCHMARKS.md (figure 3); memory in figure 5.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000


def settle_heap() -> None:
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
