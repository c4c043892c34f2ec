"""Child processes of tickpipe commands, for the demo and the tests.

Every long-running tickpipe command prints one JSON line ``{"event": "ready", ...}`` on
stdout once it serves; :class:`Child` starts a command, waits for that line (naming what
it waited for on a timeout), and stops it with SIGTERM, then SIGKILL, on every exit path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tickpipe.broker import _die_with_parent, _die_with_parent_in_own_group


def tickpipe_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tickpipe.cli", *args]


def print_ready(**fields) -> None:
    """Announce readiness to a parent process (one JSON line on stdout)."""
    print(json.dumps({"event": "ready", **fields}), flush=True)


class Child:
    def __init__(self, cmd: list[str], name: str, log_file: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None, ready_timeout: float = 20.0,
                 own_process_group: bool = False) -> None:
        self.cmd, self.name, self.ready_timeout = cmd, name, ready_timeout
        self.own_process_group = own_process_group  # Ctrl-C in a terminal reaches only the parent
        self.env = {**os.environ, **(env or {})}
        self.log_file = Path(log_file) if log_file else None
        self.process: subprocess.Popen | None = None
        self.ready: dict = {}
        self.stdout_lines: list[str] = []

    def start(self) -> "Child":
        stderr = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                                        env=self.env, text=True, bufsize=1,
                                        preexec_fn=_die_with_parent_in_own_group if self.own_process_group else _die_with_parent)
        if self.log_file:
            stderr.close()
        ready = threading.Event()
        threading.Thread(target=self._pump, args=(ready,), daemon=True).start()
        if not ready.wait(self.ready_timeout):
            self.stop()
            raise TimeoutError(f"{self.name} did not print its ready line within {self.ready_timeout:.0f}s "
                               f"(command: {' '.join(self.cmd)}; log: {self.log_file})")
        if not self.ready:
            code = self.process.wait()
            raise RuntimeError(f"{self.name} exited with code {code} before it was ready (log: {self.log_file})")
        return self

    def _pump(self, ready: threading.Event) -> None:
        assert self.process and self.process.stdout
        for line in self.process.stdout:
            self.stdout_lines.append(line.rstrip("\n"))
            if not self.ready and line.startswith("{"):
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if doc.get("event") == "ready":
                    self.ready = doc
                    ready.set()
        ready.set()  # EOF: the process is gone

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.running():
            self.process.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int | None:
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def __enter__(self) -> "Child":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
