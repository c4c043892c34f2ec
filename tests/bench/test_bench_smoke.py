"""Every benchmark command runs and prints its JSON line (tiny sizes: the figures mean nothing).

The figures themselves come from ``make bench`` (see BENCHMARKS.md); this only keeps the
commands from rotting. They run in parallel against the session's broker, with short
consumer-group timings.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from bench.run_all import FIGURES, command

REPO = Path(__file__).resolve().parents[2]


def test_every_bench_command_prints_its_json_line(kafka_broker, tmp_path):
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers, "BENCH_LOG_DIR": str(tmp_path),
           "TICKPIPE_PROCESSOR_SESSION_TIMEOUT_S": "2", "TICKPIPE_PROCESSOR_HEARTBEAT_INTERVAL_S": "0.5",
           "PYTHONPATH": str(REPO)}
    runs = {name: subprocess.Popen(command(name, quick=True), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for name in FIGURES}
    for name, proc in runs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"{name} failed:\n{err[-3000:]}"
        result = json.loads(out.strip().splitlines()[-1])
        assert result["figure"] == name and "met" in result and result["machine"]["cores"] == os.cpu_count()
