"""Fidelity: Market Prophit's documented client, Node ``socket.io-client`` 1.x, against the emulator.

Test-only dependency: ``npm install --prefix .venv/node_socketio1 socket.io-client@1.7.4``
(or ``TICKPIPE_TEST_SOCKETIO1_MODULES`` = a ``node_modules`` folder holding it); skipped
when node or the module is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.emulators.test_marketprophit import emulator, token_for

HERE = Path(__file__).parent
MODULES = Path(os.environ.get("TICKPIPE_TEST_SOCKETIO1_MODULES",
                              Path(__file__).parents[2] / ".venv" / "node_socketio1" / "node_modules"))
pytestmark = pytest.mark.skipif(shutil.which("node") is None or not (MODULES / "socket.io-client").is_dir(),
                                reason="node or socket.io-client 1.x is not installed")


async def run_client(url: str, token: str, count: int = 3) -> tuple[int, dict]:
    proc = await asyncio.create_subprocess_exec(
        "node", str(HERE / "marketprophit_sio1_client.js"), url, token, str(count),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "NODE_PATH": str(MODULES)})
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    return proc.returncode, json.loads(out.decode().strip().splitlines()[-1])


async def test_socketio_client_1x_connects_subscribes_with_ack_and_receives_res():
    async with emulator(rate=50) as emu:
        code, out = await run_client(emu.http_url(""), await token_for(emu))
    assert code == 0 and out["transport"] == "websocket"          # upgraded from polling, as 1.x does
    assert sorted(out["acks"], key=str) == [None, "Unknown endpoint: /real-time/nope"]  # callback(err): null = ok
    assert out["err"]["message"] == "Unknown endpoint: /real-time/nope"
    assert all(r[0]["ticker"] == "AAPL" and isinstance(r[0]["average_sentiment"], str) for r in out["res"])


async def test_socketio_client_1x_is_refused_with_a_bad_token():
    async with emulator() as emu:
        code, out = await run_client(emu.http_url(""), "not-a-token")
    assert code == 3 and out["res"] == []  # the client's 'error' event, as socketio-jwt's refusals gave it
    assert out["error"] == {"message": "invalid signature", "code": "invalid_token", "type": "UnauthorizedError"}
