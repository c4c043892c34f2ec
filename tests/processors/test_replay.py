"""``tickpipe replay`` over capture files and raw-topic exports, through the real CLI entry point."""

from __future__ import annotations

import json

import pytest

from tickpipe import cli
from tickpipe.envelope import KIND_SESSION_START, RawRecord
from tickpipe.processors.normalizers import NORMALIZERS
from tickpipe.processors.rawfile import export_line

PRICE = '{"type":"price","data":{"date":"2021-09-29T09:35:53","price":%s,"volume":%s,"symbol":"%s"}}'
BROKEN = '{"type":"price","data":{"date":"2021-09-29T09:35:5'


@pytest.fixture(autouse=True)
def example_normalizer(monkeypatch):
    monkeypatch.setitem(NORMALIZERS, "financefeast", "tests.processors.example_normalizer:normalize")


def lines(path, type_: str | None = None) -> list[dict]:
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    return [d for d in docs if type_ is None or d["type"] == type_]


def test_capture_file_to_ticks_and_dead_letters(tmp_path, capsys):
    capture = tmp_path / "capture.txt"
    frames = ['{"type":"authenticated","data":{"message":"ok"}}', PRICE % ("3.0400", "100", "NZB.NZ"),
              BROKEN, PRICE % ("0.00000001", "2.50", "AIR.NZ")]
    capture.write_text("\n".join(frames) + "\n")
    ticks, dlq = tmp_path / "ticks.jsonl", tmp_path / "dlq.jsonl"
    assert cli.main(["replay", "--provider", "financefeast", str(capture), "--ticks", str(ticks), "--dlq", str(dlq)]) == 0
    trades = lines(ticks, "Trade")  # the file may also hold the integrity stage's alerts
    assert [(t["type"], t["symbol"], t["price"], t["size"]) for t in trades] == [
        ("Trade", "NZB.NZ", "3.0400", "100"), ("Trade", "AIR.NZ", "0.00000001", "2.50")]
    assert [(t["conn"], t["session"], t["frame_seq"], t["recv_time"]) for t in trades] == [
        ("replay", "replay", 2, 0), ("replay", "replay", 4, 0)]
    assert trades[0]["event_time"] == 1632908153000000000
    [dead] = lines(dlq)
    assert dead["type"] == "DeadLetter" and dead["error_kind"] == "parse"
    assert dead["payload"] == BROKEN  # the original frame, byte for byte
    assert dead["frame_seq"] == 3
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["frames"] == 4 and summary["ticks"] == 2 and summary["dead_letters"] == 1


def test_raw_topic_export_keeps_sessions_from_markers(tmp_path, capsysbinary):
    def rec(seq, session, payload, kind="frame"):
        r = RawRecord("financefeast", "ff-0", session, seq, 1_000 + seq, payload.encode(), kind=kind)
        return export_line(r.key, r.payload, r.headers(), "raw.financefeast", 0, seq - 1)

    export = tmp_path / "export.jsonl"
    export.write_bytes(b"".join([
        rec(1, "s1", '{"event":"session_start"}', KIND_SESSION_START), rec(2, "s1", PRICE % ("1.10", "5", "A.NZ")),
        rec(3, "s2", '{"event":"session_start"}', KIND_SESSION_START), rec(4, "s2", PRICE % ("1.20", "6", "A.NZ"))]))
    assert cli.main(["replay", "--provider", "financefeast", str(export)]) == 0
    out = [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    ticks = [t for t in out if t["type"] == "Trade"]
    assert [(t["session"], t["conn"], t["frame_seq"], t["recv_time"], t["price"]) for t in ticks] == [
        ("s1", "ff-0", 2, 1002, "1.10"), ("s2", "ff-0", 4, 1004, "1.20")]
    [reset] = [a for a in out if a["type"] == "GapAlert"]   # the session break, with its uncovered span
    assert (reset["kind"], reset["scope"], reset["session"], reset["span_start"], reset["span_end"]) == (
        "RESET", "connection", "s2", 1002, 1003)


def test_bad_export_line_is_reported_with_its_number(tmp_path, capsys):
    export = tmp_path / "export.jsonl"
    export.write_text('{"tp_raw": 1, "key": "c", "headers": [], "value": "x"}\n{"tp_raw": 1, "key": 5}\n')
    assert cli.main(["replay", "--provider", "financefeast", str(export), "--ticks", str(tmp_path / "t")]) == 1
    assert "line 2: not a raw-topic export record" in capsys.readouterr().err


def test_provider_without_normalizer_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(NORMALIZERS, "financefeast", "tickpipe.processors.normalizers.nothing_here:normalize")
    (tmp_path / "f").write_text("{}\n")
    assert cli.main(["replay", "--provider", "financefeast", str(tmp_path / "f")]) == 2
    assert "does not exist yet" in capsys.readouterr().err
