"""``tickpipe demo``: the whole pipeline on one machine with a live view.

:mod:`.cast` (which providers run, the fault mix), :mod:`.emulated` (producer settings for an
emulator), :mod:`.children` (the child processes), :mod:`.session` (one run, start to
summary), observers (:mod:`.scrape` Prometheus, :mod:`.observer` clean topics,
:mod:`.journals` emulator journals), :mod:`.scoring` (injected versus detected),
:mod:`.live`/:mod:`.view` (the live view) and :mod:`.summary`.
"""
