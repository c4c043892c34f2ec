"""The demo's child processes in one run directory: emulators, producers, the processor.

Every child runs in a process group of its own (a terminal's Ctrl-C reaches only the demo,
which stops the children in order) and dies with the demo. Logs and journals go to the run
directory: ``<name>.log``, ``emulate-<provider>.journal``.
"""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tickpipe.children import Child, tickpipe_command
from tickpipe.demo.cast import FAULT_MIX
from tickpipe.demo.emulated import emulator_env, producer_env

# The processor joins its consumer group in about half the session timeout; keep it short.
PROCESSOR_ENV = {"TICKPIPE_PROCESSOR_SESSION_TIMEOUT_S": "6", "TICKPIPE_PROCESSOR_HEARTBEAT_INTERVAL_S": "1",
                 "TICKPIPE_PROCESSOR_COMMIT_INTERVAL_S": "0.5",
                 # a held record waits this long for a late one; wide, as on a busy 2-core laptop the
                 # processor may lag the feed by more than the 500 ms default
                 "TICKPIPE_INTEGRITY_REORDER_WINDOW_MS": "1000"}
KEPT_KAFKA_ENV = ("TICKPIPE_KAFKA_TOPIC_PREFIX", "TICKPIPE_KAFKA_CLIENT_ID")
PRODUCER_DEFAULTS = {"TICKPIPE_PRODUCER_UNSUBSCRIBE_TIMEOUT_S": "0.5", "TICKPIPE_PRODUCER_BACKOFF_INITIAL_S": "0.2",
                     "TICKPIPE_PRODUCER_LINGER_MS": "5"}


@dataclass
class Cast:
    """Every child of one demo run, by role."""

    run_dir: Path
    bootstrap: str
    rate: float
    seed: int
    emulators: dict[str, Child] = field(default_factory=dict)
    producers: dict[str, Child] = field(default_factory=dict)
    processor: Child | None = None

    def _base_env(self) -> dict[str, str]:
        return {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "TICKPIPE_OPS_HOST": "127.0.0.1"}

    def _child(self, name: str, args: list[str], env: dict[str, str], ready_timeout: float = 30.0) -> Child:
        child = Child(tickpipe_command(*args), name, self.run_dir / f"{name}.log", ready_timeout=ready_timeout,
                      own_process_group=True)
        for key in [k for k in child.env if k.startswith("TICKPIPE_KAFKA_") and k not in KEPT_KAFKA_ENV]:
            del child.env[key]              # the embedded broker speaks plaintext, whatever the shell has set
        child.env.update({**self._base_env(), **env})
        return child

    def journal(self, provider: str) -> Path:
        return self.run_dir / f"emulate-{provider}.journal"

    async def start_emulators(self, providers: list[str], faults: dict[str, str] | None = None) -> None:
        faults = FAULT_MIX if faults is None else faults
        for i, provider in enumerate(providers):
            args = ["emulate", provider, "--port", "0", "--ops-port", "0", "--seed", str(self.seed + i),
                    "--rate", f"{self.rate:g}", "--journal", str(self.journal(provider))]
            if faults.get(provider):
                args += ["--faults", faults[provider]]
            self.emulators[provider] = self._child(f"emulate-{provider}", args, emulator_env(provider))
        await _start_all(self.emulators.values())

    async def start_producers(self) -> None:
        for provider, emulator in self.emulators.items():
            env = {**PRODUCER_DEFAULTS, **producer_env(provider, int(emulator.ready["port"]))}
            self.producers[provider] = self._child(f"produce-{provider}", ["produce", provider, "--ops-port", "0"], env)
        await _start_all(self.producers.values())

    async def start_processor(self, providers: list[str]) -> None:
        self.processor = self._child("process", ["process", "--providers", *providers, "--ops-port", "0"],
                                     PROCESSOR_ENV, ready_timeout=90.0)
        await _start_all([self.processor])

    def ops_ports(self) -> dict[str, int]:
        """``produce-<provider>`` / ``process`` -> the child's ops port."""
        ports = {f"produce-{p}": c.ready.get("ops_port") for p, c in self.producers.items()}
        if self.processor is not None:
            ports["process"] = self.processor.ready.get("ops_port")
        return {name: port for name, port in ports.items() if port}

    def dead(self) -> list[str]:
        """Children that have exited although nobody stopped them."""
        children = [*self.emulators.values(), *self.producers.values(), *([self.processor] if self.processor else [])]
        return [c.name for c in children if c.process is not None and not c.running()]

    def freeze_feeds(self) -> None:
        """Pause every emulator (SIGSTOP): what they journaled is all they will have sent."""
        for child in self.emulators.values():
            child.signal(signal.SIGSTOP)

    def thaw_feeds(self) -> None:
        for child in self.emulators.values():
            child.signal(signal.SIGCONT)

    async def stop_producers(self) -> dict[str, int | None]:
        return await _stop_all(self.producers)

    async def stop_processor(self) -> dict[str, int | None]:
        return await _stop_all({"process": self.processor} if self.processor else {})

    async def stop_emulators(self) -> dict[str, int | None]:
        self.thaw_feeds()   # a stopped process would not act on SIGTERM
        return await _stop_all(self.emulators)

    async def stop_all(self) -> None:
        """Every exit path: producers, processor, emulators; each one reaped."""
        await self.stop_producers()
        await self.stop_processor()
        await self.stop_emulators()


# Children are started from these threads, which must outlive them: PR_SET_PDEATHSIG fires
# when the *thread* that forked a child ends. The pool lives as long as the demo process.
_STARTERS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="demo-start")


async def _start_all(children) -> None:
    """Start children in parallel (each start waits for the child's ready line)."""
    children = list(children)
    loop = asyncio.get_running_loop()
    results = await asyncio.gather(*(loop.run_in_executor(_STARTERS, c.start) for c in children), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]


async def _stop_all(children: dict[str, Child], timeout: float = 20.0) -> dict[str, int | None]:
    """SIGTERM every child at once, wait for all (SIGKILL after ``timeout``), reap them."""
    running = {n: c for n, c in children.items() if c.running()}
    for child in running.values():
        child.signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(c.running() for c in running.values()) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    for child in running.values():
        if child.running():
            child.process.kill()
    return {n: c.stop(5.0) for n, c in children.items()}   # already exited: stop() only reaps
