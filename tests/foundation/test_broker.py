"""The embedded broker: starts, answers, refuses a taken port, stops without orphans."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tickpipe.broker import BrokerError, EmbeddedBroker, metadata_answers
from tickpipe.children import tickpipe_command


def _pids_of(binary_fragment: str) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if binary_fragment.encode() in fh.read():
                        pids.add(int(entry))
            except OSError:
                pass
    return pids


def test_context_manager_answers_and_reaps_the_child():
    with EmbeddedBroker() as broker:
        pid = broker.process.pid
        assert metadata_answers(broker.host, broker.port)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not metadata_answers(broker.host, broker.port, timeout=0.3)


def test_child_is_reaped_when_the_body_raises():
    with pytest.raises(ZeroDivisionError):
        with EmbeddedBroker() as broker:
            pid = broker.process.pid
            1 / 0
    assert not os.path.exists(f"/proc/{pid}")


def test_taken_port_is_refused_naming_the_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is already in use"):
            EmbeddedBroker(port=port).start()


def test_cli_broker_prints_address_refuses_taken_port_and_stops_on_sigterm(tmp_path):
    log = tmp_path / "tansu.log"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(tickpipe_command("broker", "--port", str(port), "--data-log", str(log)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line == f"127.0.0.1:{port}"
        assert metadata_answers("127.0.0.1", port)
        tansu = _pids_of("tansu") & {int(p) for p in _children(proc.pid)}
        assert tansu, "the broker command should run a Tansu child"
        second = subprocess.run(tickpipe_command("broker", "--port", str(port)), capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert f"port {port}" in second.stderr and "already in use" in second.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        time.sleep(0.2)
        assert not any(os.path.exists(f"/proc/{p}") and _state(p) != "Z" for p in tansu)
        assert log.stat().st_size > 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_tansu_dies_with_a_sigkilled_parent():
    code = ("from tickpipe.broker import EmbeddedBroker; import sys, time;"
            "b = EmbeddedBroker().start(); print(b.process.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    tansu_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists(f"/proc/{tansu_pid}") and _state(tansu_pid) != "Z":
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{tansu_pid}") or _state(tansu_pid) == "Z"


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _children(pid: int) -> list[str]:
    try:
        return open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return []
