"""`tickpipe demo` in its foundation form: broker up, topics declared, clean exit, no orphans."""

from __future__ import annotations

import json
import os
import subprocess

from tickpipe.children import tickpipe_command
from tickpipe.topics import catalogue


def _tansu_pids() -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if b"tansu" in open(f"/proc/{entry}/cmdline", "rb").read():
                    pids.add(int(entry))
            except OSError:
                pass
    return pids


def test_demo_runs_for_its_duration_and_writes_a_summary(tmp_path):
    before = _tansu_pids()
    summary_file = tmp_path / "summary.json"
    proc = subprocess.run(tickpipe_command("demo", "--duration", "2", "--json", str(summary_file)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(summary_file.read_text())
    assert len(summary["topics_created"]) == len(catalogue())
    assert _tansu_pids() - before == set()
