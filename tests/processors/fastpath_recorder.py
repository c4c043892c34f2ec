"""A normalizer for the fast-path tests: the worked example, plus a line ``pid conn tp-seq`` per frame it
is given in ``TICKPIPE_TEST_FRAMES_LOG``, and ``TICKPIPE_TEST_FRAME_DELAY_S`` of work per frame."""

import os
import time

from tests.processors.example_normalizer import normalize as normalize_example

_LOG = os.environ.get("TICKPIPE_TEST_FRAMES_LOG", os.devnull)
_DELAY_S = float(os.environ.get("TICKPIPE_TEST_FRAME_DELAY_S", "0"))


def normalize(frame) -> None:
    with open(_LOG, "a") as log:
        log.write(f"{os.getpid()} {frame.raw.conn} {frame.raw.seq}\n")
    if _DELAY_S:
        time.sleep(_DELAY_S)
    normalize_example(frame)
