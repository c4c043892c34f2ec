"""Fidelity: coinbase-advanced-py's own WSClient, unmodified, against the Coinbase emulator.

The SDK pins ``websockets<14`` and fails on the project's websockets 17 (it passes
``extra_headers``, which the new client API rejects), so it runs in a throwaway venv
under ``.venv-fidelity/coinbase`` built once from the package mirror; the test is skipped,
naming the reason, only if that install fails.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.emulators.coinbase_helpers import KEY_NAME, ec_key, ed_key, ed_raw_b64, emulator, public_pem, sec1_pem

SDK = "coinbase-advanced-py==1.8.4"
VENV = Path(__file__).resolve().parents[2] / ".venv-fidelity" / "coinbase"
CLIENT = Path(__file__).with_name("coinbase_sdk_client.py")


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    python, marker = VENV / "bin" / "python", VENV / f".installed-{SDK}"
    VENV.parent.mkdir(exist_ok=True)
    with open(VENV.parent / "coinbase.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            steps = ([sys.executable, "-m", "venv", "--clear", str(VENV)],
                     [str(python), "-m", "pip", "install", "--quiet", SDK])
            for cmd in steps:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if done.returncode != 0:
                    pytest.skip(f"cannot build the fidelity venv ({' '.join(cmd[-2:])}): {done.stderr.strip()[-400:]}")
            marker.touch()
    return python


async def run_sdk(python: Path, url: str, key_file: str, channels: str, products: str = "BTC-USD",
                  seconds: float = 1.5, *extra: str) -> list[dict]:
    proc = await asyncio.create_subprocess_exec(str(python), str(CLIENT), url, KEY_NAME, key_file, str(seconds), channels,
                                                products, *extra, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert lines[-1] == {"done": True}
    return lines[:-1]


async def test_sdk_wsclient_connects_authenticates_subscribes_and_parses(sdk_python, tmp_path):
    es, ed = ec_key(), ed_key()
    (tmp_path / "es.pem").write_text(sec1_pem(es))
    (tmp_path / "ed.b64").write_text(ed_raw_b64(ed))
    async with emulator(rate=20, public_keys=public_pem(es, ed), key_name=KEY_NAME) as emu:
        url = emu.ws_url("")   # the SDK's base_url is the bare endpoint
        es_run, ed_run, public_run = await asyncio.gather(
            run_sdk(sdk_python, url, str(tmp_path / "es.pem"), "heartbeats,ticker,level2,market_trades,user"),
            run_sdk(sdk_python, url, str(tmp_path / "ed.b64"), "user,candles,status"),
            run_sdk(sdk_python, url, "-", "ticker_batch,heartbeats,market_trades", "ETH-USD"))
    for run, wanted in ((es_run, {"subscriptions", "heartbeats", "ticker", "l2_data", "market_trades", "user"}),
                        (ed_run, {"subscriptions", "user", "candles", "status"}),
                        (public_run, {"subscriptions", "ticker_batch", "market_trades"})):
        frames = [json.loads(line["raw"]) for line in run]
        assert not [f for f in frames if f.get("type") == "error"]
        assert all(line["parsed"] for line in run)          # the SDK's WebsocketResponse read every frame
        assert wanted <= {f["channel"] for f in frames}
        assert [f["sequence_num"] for f in frames] == list(range(len(frames)))
    assert any(f["channel"] == "user" and f["events"][0]["orders"]
               for f in (json.loads(line["raw"]) for line in ed_run))


async def test_sdk_reconnects_and_resubscribes_after_an_injected_disconnect(sdk_python, tmp_path):
    key = ec_key()
    (tmp_path / "es.pem").write_text(sec1_pem(key))
    async with emulator("disconnect_every=0.6,close_code=1011", rate=20, public_keys=public_pem(key), key_name=KEY_NAME) as emu:
        run = await run_sdk(sdk_python, emu.ws_url(""), str(tmp_path / "es.pem"), "ticker", "BTC-USD", 4, "retry")
        assert emu._connections >= 2
    frames = [json.loads(line["raw"]) for line in run]
    restarts = [i for i, f in enumerate(frames) if f["sequence_num"] == 0]
    assert len(restarts) >= 2 and restarts[0] == 0                    # a new connection counts from 0 again
    for i in restarts:
        assert frames[i] == {**frames[i], "channel": "subscriptions",
                             "events": [{"subscriptions": {"ticker": ["BTC-USD"]}}]}
