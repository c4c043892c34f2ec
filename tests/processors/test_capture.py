"""``tickpipe capture`` against a real emulator process: frames on disk exactly as the emulator sent them."""

from __future__ import annotations

import base64
import json
import os
import subprocess

import msgpack

from tickpipe.children import Child, tickpipe_command
from tickpipe.emulators.journal import read_journal


def capture(tmp_path, port: int, *args: str, encoding: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TICKPIPE_ALPACA_ENCODING": encoding, "TICKPIPE_ALPACA_URL": f"ws://127.0.0.1:{port}", "TICKPIPE_ALPACA_KEY_ID": "PKCAPTURE",
           "TICKPIPE_ALPACA_SECRET_KEY": "capture-secret"}
    return subprocess.run(tickpipe_command("capture", "alpaca", *args), capture_output=True, env=env, timeout=60)


def test_capture_writes_each_text_frame_as_one_line_and_export_mode_keeps_sessions(tmp_path):
    journal = tmp_path / "journal.jsonl"
    emulator = Child(tickpipe_command("emulate", "alpaca", "--rate", "200", "--journal", str(journal), "--ops-port", "0"),
                     "alpaca emulator", log_file=tmp_path / "emulator.log")
    with emulator:
        port = emulator.ready["port"]
        out = tmp_path / "capture.txt"
        done = capture(tmp_path, port, "--out", str(out), "--limit", "30", encoding="json")
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        export = tmp_path / "export.jsonl"
        done = capture(tmp_path, port, "--out", str(export), "--export", "--limit", "5", encoding="msgpack")
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        refused = capture(tmp_path, port, "--out", str(tmp_path / "x.txt"), "--limit", "3", encoding="msgpack")
        assert refused.returncode == 1 and b"use --export" in refused.stderr
    lines = out.read_text().splitlines()
    assert len(lines) >= 30
    frames = [json.loads(line) for line in lines]
    assert frames[0] == [{"T": "success", "msg": "connected"}] and frames[1] == [{"T": "success", "msg": "authenticated"}]
    captured = [(m["S"], m["i"]) for f in frames for m in f if m.get("T") == "t"]
    sent = [(e["ids"]["instrument"], e["ids"]["trade_id"]) for e in read_journal(str(journal))
            if e["event"] == "sent" and e["ids"]["kind"] == "trade" and e["conn"] == 1]
    assert captured and captured == sent[:len(captured)], "every trade the emulator sent, in order"
    exported = [json.loads(line) for line in export.read_text().splitlines()]
    kinds = [dict(e["headers"])["tp-kind"] for e in exported]
    assert kinds[0] == "session_start" and kinds[-1] == "session_end"
    assert {dict(e["headers"])["tp-provider"] for e in exported} == {"alpaca"}
    binary = [msgpack.unpackb(base64.b64decode(e["value_base64"])) for e in exported if "value_base64" in e]
    assert binary[0] == [{"T": "success", "msg": "connected"}]
