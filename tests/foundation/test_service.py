"""Process basics: /metrics, /healthz, /readyz, and SIGTERM handling through run_service."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from tickpipe.service import OpsServer


async def test_ops_server_serves_metrics_health_and_readiness():
    registry = CollectorRegistry()
    frames = Counter("tickpipe_test_frames_total", "frames", ["provider"], registry=registry)
    frames.labels("alpaca").inc(3)
    ready = {"connected": False}
    ops = OpsServer("127.0.0.1", 0, registry=registry)
    ops.add_readiness("feed", lambda: (ready["connected"], "not connected"))
    ops.add_readiness("broken", lambda: 1 / 0 if not ready["connected"] else True)
    await ops.start()
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{ops.port}"
            async with http.get(base + "/metrics") as r:
                assert r.status == 200
                assert 'tickpipe_test_frames_total{provider="alpaca"} 3.0' in await r.text()
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
            async with http.get(base + "/readyz") as r:
                assert r.status == 503
                body = await r.json()
                assert body == {"ready": False, "checks": {"feed": "not connected", "broken": "check raised ZeroDivisionError"}}
            ready["connected"] = True
            async with http.get(base + "/readyz") as r:
                assert r.status == 200 and (await r.json())["ready"] is True
    finally:
        await ops.stop()


def test_run_service_gives_main_a_chance_to_flush_on_sigterm(tmp_path):
    out = tmp_path / "flushed"
    code = textwrap.dedent(f"""
        import asyncio, sys
        from tickpipe.service import run_service
        async def main(stop):
            print("ready", flush=True)
            await stop.wait()
            await asyncio.sleep(0.2)          # the flush
            open({str(out)!r}, "w").write("done")
            return 0
        sys.exit(run_service(main, grace_s=5))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert out.read_text() == "done"


def test_run_service_forces_exit_after_the_grace_period():
    code = textwrap.dedent("""
        import asyncio, sys
        from tickpipe.service import run_service
        async def main(stop):
            print("ready", flush=True)
            await stop.wait()
            await asyncio.sleep(60)           # a flush that never ends
        sys.exit(run_service(main, grace_s=0.5))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 1


def test_every_subcommand_has_help():
    from tickpipe.cli import COMMANDS
    from tickpipe.children import tickpipe_command

    top = subprocess.run(tickpipe_command("--help"), capture_output=True, text=True, timeout=60)
    assert top.returncode == 0
    for name in COMMANDS:
        assert name in top.stdout
        sub = subprocess.run(tickpipe_command(name, "--help"), capture_output=True, text=True, timeout=60)
        assert sub.returncode == 0 and f"tickpipe {name}" in sub.stdout, sub.stderr


def test_configuration_error_exits_2_naming_the_setting():
    from tickpipe.children import tickpipe_command
    import os

    env = {**os.environ, "TICKPIPE_TOPICS_RAW_PARTITIONS": "zero"}
    proc = subprocess.run(tickpipe_command("topics", "list"), capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert "TICKPIPE_TOPICS_RAW_PARTITIONS: expected an integer, got 'zero'" in proc.stderr
