"""`tickpipe demo`, for real: every process, the embedded broker, faults injected and found.

One ~35 s run (20 s of streaming): it exits 0, leaves no process behind, every provider
flows, `tickpipe tail` decodes clean records while it runs, and for every provider the
anomalies detected equal the ones injected, kind by kind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from tickpipe.children import tickpipe_command
from tickpipe.demo.emulated import PLACEHOLDER
from tickpipe.providers import PROVIDERS

pytestmark = pytest.mark.kafka   # it needs a broker (its own embedded one) and ~40 s


def processes_mentioning(*needles: str) -> list[str]:
    """Command lines of live processes whose command line or environment holds a needle."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:
            continue
        if any(n.encode() in cmdline or n.encode() in environ for n in needles):
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def tail_while_running(demo: subprocess.Popen, seen: dict) -> None:
    """Read the demo's stdout; once the broker is up, run `tickpipe tail ticks.trade` against it."""
    for line in demo.stdout:
        seen.setdefault("stdout", []).append(line)
        if line.startswith("embedded broker: ") and "tail" not in seen:
            env = {**os.environ, "TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": line.split(": ", 1)[1].strip()}
            seen["tail"] = subprocess.run(tickpipe_command("tail", "ticks.trade", "--limit", "5", "--timeout", "40"),
                                          capture_output=True, text=True, timeout=90, env=env)


def test_a_short_demo_run_flows_everywhere_and_finds_every_injected_fault(tmp_path):
    run_dir, summary_file = tmp_path / "run", tmp_path / "summary.json"
    demo = subprocess.Popen(tickpipe_command("demo", "--duration", "20", "--json", str(summary_file),
                                             "--run-dir", str(run_dir)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict = {}
    reader = threading.Thread(target=tail_while_running, args=(demo, seen), daemon=True)
    reader.start()
    try:
        code = demo.wait(timeout=150)
    finally:
        if demo.poll() is None:
            demo.kill()
    reader.join(30)
    stderr = demo.stderr.read()
    assert code == 0, stderr[-3000:]

    summary = json.loads(summary_file.read_text())
    assert processes_mentioning(str(run_dir), summary["bootstrap_servers"]) == []
    assert set(summary["providers"]) | set(summary["skipped"]) == set(PROVIDERS)
    assert summary["providers"], summary["skipped"]
    assert set(summary["exit_codes"].values()) == {0}

    for name, p in summary["providers"].items():
        assert p["frames"] > 0 and p["ticks_total"] > 0, (name, p)
        assert p["latency_ms"]["p50"] is not None and p["latency_ms"]["p50"] <= p["latency_ms"]["p99"]
        rows = p["anomalies"]["by_kind"]
        assert all(row["equal"] for row in rows.values() if row["scored"]), (name, rows)
    totals = summary["totals"]
    assert totals["undecodable_records"] == 0 and totals["ticks"] > 0 and totals["producer_gaps"] == 0
    for kind in ("GAP", "OUT_OF_ORDER", "DUPLICATE", "DLQ", "RESET"):   # the run really injected each kind
        repeats = totals["feed_repeats"] if kind == "DUPLICATE" else 0   # resubscribes' repeats (see scoring)
        assert totals["injected"][kind] > 0 and totals["injected"][kind] + repeats == totals["detected"][kind], \
            (kind, totals)

    tail = seen["tail"]     # a second terminal's `tickpipe tail` decoded clean trades while the demo ran
    records = [json.loads(line) for line in tail.stdout.splitlines()]
    assert tail.returncode == 0 and len(records) == 5, tail.stderr
    assert all(r["type"] == "Trade" and r["provider"] in summary["providers"] and r["price"] for r in records)
    assert any(line.startswith('{"event":"demo_status"') for line in seen["stdout"])   # not a TTY: log lines
    logs = "".join(path.read_text(errors="replace") for path in run_dir.glob("*.log"))   # every child's log
    assert "producer stopped" in logs and PLACEHOLDER not in logs + stderr   # the demo credentials never show


def test_ctrl_c_stops_every_child_and_still_prints_the_summary(tmp_path):
    run_dir, summary_file = tmp_path / "run", tmp_path / "summary.json"
    demo = subprocess.Popen(tickpipe_command("demo", "--providers", "coinbase", "alpaca", "--json", str(summary_file),
                                             "--run-dir", str(run_dir)),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in demo.stdout:               # the first status line: everything is up
            if line.startswith('{"event":"demo_status"'):
                break
        time.sleep(3)
        demo.send_signal(signal.SIGINT)        # what Ctrl-C sends (to the demo only: children have their own group)
        out, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0
    summary = json.loads(summary_file.read_text())
    assert summary["ended_by"] == "interrupted" and "demo summary" in out
    assert set(summary["exit_codes"].values()) == {0}
    assert processes_mentioning(str(run_dir), summary["bootstrap_servers"]) == []
    assert all(p["ticks_total"] > 0 and p["anomalies"]["all_equal"] for p in summary["providers"].values())
