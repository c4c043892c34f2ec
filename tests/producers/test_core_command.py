"""``tickpipe produce`` as a real subprocess: SIGTERM flushes everything accepted; secrets stay out of logs."""

from __future__ import annotations

import asyncio
import signal
import urllib.request

from tickpipe.children import Child, tickpipe_command
from tickpipe.envelope import KIND_FRAME, KIND_SESSION_END, decode_marker

from tests.producers.core_support import FeedServer, declare_echo_topics, read_raw, wait_for

ADAPTER = "tests.producers.core_support:EchoAdapter"


def _env(kafka, feed: FeedServer, key_file, **extra) -> dict[str, str]:
    env = {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "TICKPIPE_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
           "TICKPIPE_ECHO_URL": feed.url, "TICKPIPE_ECHO_KEY_FILE": str(key_file), "TICKPIPE_ECHO_SYMBOLS": "AAPL,MSFT",
           "TICKPIPE_OPS_HOST": "127.0.0.1", "TICKPIPE_OPS_LOG_LEVEL": "DEBUG", "TICKPIPE_PRODUCER_BACKOFF_INITIAL_S": "0.05"}
    env.update(extra)
    return env


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_sigterm_unsubscribes_flushes_everything_accepted_and_exits_0(kafka_settings, tmp_path):
    await declare_echo_topics(kafka_settings)
    key_file = tmp_path / "key"
    key_file.write_text("good-key-123\n")
    log = tmp_path / "producer.log"
    async with FeedServer(rate=300) as feed:
        # a long linger keeps records waiting inside the Kafka client when SIGTERM comes
        env = _env(kafka_settings, feed, key_file, TICKPIPE_PRODUCER_LINGER_MS="1500")
        child = Child(tickpipe_command("produce", "echo", "--adapter", ADAPTER, "--connection-id", "echo-sig",
                                       "--ops-port", "0"), "producer", log_file=log, env=env)
        await asyncio.to_thread(child.start)
        try:
            port = child.ready["ops_port"]
            await wait_for(lambda: _get(port, "/readyz")[0] == 200, what="/readyz 200")
            await wait_for(lambda: feed.connections and len(feed.connections[0].sent) > 200, what="frames flowing")
            produced = 'tickpipe_producer_frames_produced_total{provider="echo"}'
            await wait_for(lambda: _metric_values(_get(port, "/metrics")[1]).get(produced, 0) > 0, what="a first batch")
            metrics = _metric_values(_get(port, "/metrics")[1])
            child.signal(signal.SIGTERM)
            code = await asyncio.to_thread(child.process.wait, 30)
        finally:
            child.stop()
        assert code == 0
        conn = feed.connections[0]
        assert {"action": "unsubscribe", "symbols": ["AAPL", "MSFT"]} in conn.received
    records = await read_raw(kafka_settings, "echo", lambda rs: any(r.kind == KIND_SESSION_END for r in rs))
    end = decode_marker(records[-1].payload)
    assert records[-1].kind == KIND_SESSION_END and end["reason"] == "shutdown"
    frames = [r.payload for r in records if r.kind == KIND_FRAME]
    assert len(frames) == end["frames"] > 200                       # every frame received reached Kafka
    assert frames == [f.encode() for f in conn.sent[:len(frames)]]  # verbatim and in order
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert "good-key-123" not in log.read_text()
    for name in ("frames_received_total", "bytes_received_total", "frames_produced_total", "produce_latency_seconds_count"):
        assert metrics[f'tickpipe_producer_{name}{{provider="echo"}}'] > 0, name
    assert metrics['tickpipe_producer_connected{provider="echo"}'] == metrics['tickpipe_producer_ready{provider="echo"}'] == 1
    assert 0 <= metrics['tickpipe_producer_seconds_since_last_frame{provider="echo"}'] < 5
    assert 'tickpipe_producer_buffer_fill_ratio{provider="echo"}' in metrics
    assert metrics.get('tickpipe_producer_frames_dropped_total{provider="echo"}', 0) == 0


def _metric_values(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def test_wrong_key_is_logged_once_retried_slowly_and_never_shown(kafka_settings, tmp_path):
    await declare_echo_topics(kafka_settings)
    key_file = tmp_path / "key"
    key_file.write_text("wrong-key-456")
    log = tmp_path / "producer.log"
    async with FeedServer(echo_bad_key=True) as feed:
        env = _env(kafka_settings, feed, key_file, TICKPIPE_PRODUCER_AUTH_RETRY_MIN_S="0.5",
                   TICKPIPE_PRODUCER_AUTH_RETRY_MAX_S="1.0")
        with Child(tickpipe_command("produce", "echo", "--adapter", ADAPTER, "--ops-port", "0"), "producer",
                   log_file=log, env=env) as child:
            port = child.ready["ops_port"]
            await wait_for(lambda: len(feed.connections) >= 1, what="a first attempt")
            await asyncio.sleep(3.0)
            attempts = len(feed.connections)
            status, _ = _get(port, "/readyz")
            _, metrics = _get(port, "/metrics")
    assert 2 <= attempts <= 8, attempts        # slow pace: at least 0.5 s apart, never a tight loop
    assert status == 503
    failures = [line for line in metrics.splitlines() if line.startswith('tickpipe_producer_auth_failures_total{provider="echo"}')]
    assert failures and float(failures[0].split()[-1]) >= 2
    assert 'tickpipe_producer_auth_failing{provider="echo"} 1.0' in metrics
    text = log.read_text()
    assert text.count("authentication refused: check the credentials") == 1
    assert "wrong-key-456" not in text and "invalid key ***" in text   # the feed echoed it; the log masks it


async def test_real_adapter_subprocess_against_the_emulator_subprocess_loses_nothing_on_sigterm(kafka_settings, tmp_path):
    """``tickpipe produce alpaca`` against ``tickpipe emulate alpaca``: both real processes."""
    import json

    from tickpipe.admin import declare_topics

    await declare_topics(kafka_settings)
    (tmp_path / "key").write_text("PKCORE")
    (tmp_path / "secret").write_text("core-secret-789")
    journal = tmp_path / "journal.jsonl"
    emulator = Child(tickpipe_command("emulate", "alpaca", "--rate", "300", "--journal", str(journal), "--ops-port", "0"),
                     "emulator", log_file=tmp_path / "emulator.log",
                     env={"TICKPIPE_EMULATOR_ALPACA_KEY_ID": "PKCORE", "TICKPIPE_EMULATOR_ALPACA_SECRET_KEY": "core-secret-789"})
    log = tmp_path / "producer.log"
    with emulator:
        env = {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
               "TICKPIPE_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix, "TICKPIPE_OPS_HOST": "127.0.0.1",
               "TICKPIPE_ALPACA_URL": f"ws://127.0.0.1:{emulator.ready['port']}", "TICKPIPE_ALPACA_ENCODING": "json",
               "TICKPIPE_ALPACA_KEY_ID_FILE": str(tmp_path / "key"), "TICKPIPE_ALPACA_SECRET_KEY_FILE": str(tmp_path / "secret"),
               "TICKPIPE_OPS_LOG_LEVEL": "DEBUG", "TICKPIPE_PRODUCER_LINGER_MS": "1000"}
        producer = Child(tickpipe_command("produce", "alpaca", "--ops-port", "0"), "producer", log_file=log, env=env)
        await asyncio.to_thread(producer.start)
        try:
            port = producer.ready["ops_port"]
            await wait_for(lambda: _get(port, "/readyz")[0] == 200, what="/readyz 200")
            await asyncio.sleep(1.0)
            producer.signal(signal.SIGTERM)
            code = await asyncio.to_thread(producer.process.wait, 30)
        finally:
            producer.stop()
    assert code == 0
    records = await read_raw(kafka_settings, "alpaca", lambda rs: any(r.kind == KIND_SESSION_END for r in rs))
    end = decode_marker(records[-1].payload)
    frames = [json.loads(r.payload) for r in records if r.kind == KIND_FRAME]
    assert end["reason"] == "shutdown" and len(frames) == end["frames"] > 10
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    got = [(m["S"], m["i"]) for frame in frames for m in frame if m.get("T") == "t"]
    sent = [(e["ids"]["instrument"], e["ids"]["trade_id"]) for e in map(json.loads, journal.read_text().splitlines())
            if e["event"] == "sent" and e["ids"].get("kind") == "trade"]
    assert got and got == sent[:len(got)]                       # in order, nothing missing
    text = log.read_text()
    assert "core-secret-789" not in text and "PKCORE" not in text


def test_bad_command_lines_and_missing_credentials_exit_2_naming_the_problem(capsys, monkeypatch):
    from tickpipe.cli import main

    monkeypatch.delenv("TICKPIPE_ALPACA_SECRET_KEY", raising=False)
    monkeypatch.setenv("TICKPIPE_ALPACA_KEY_ID", "PKSOMETHING")
    assert main(["produce", "nope"]) == 2
    assert "unknown provider 'nope'" in capsys.readouterr().err
    assert main(["produce", "alpaca", "--connection-id", "a b"]) == 2
    assert "--connection-id must be" in capsys.readouterr().err
    assert main(["produce", "echo", "--adapter", "tests.producers.core_support:Missing"]) == 2
    assert "Missing" in capsys.readouterr().err
    assert main(["produce", "alpaca"]) == 2
    err = capsys.readouterr().err
    assert "TICKPIPE_ALPACA_SECRET_KEY: required setting is not set" in err and "PKSOMETHING" not in err
