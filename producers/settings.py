"""Section ``producer``: the shared connection loop and the Kafka sink of every producer."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from tickpipe.config import ConfigError, env_name, load_section, setting

SECTION = "producer"
COMPRESSION = ("none", "gzip", "snappy", "lz4", "zstd")


@dataclass(frozen=True)
class ProducerSettings:
    # --- connection loop ---
    connect_timeout_s: float = setting(15.0, minimum=0.1, help="time allowed to open a connection")
    auth_timeout_s: float = setting(15.0, minimum=0.1, help="time allowed for authenticate and subscribe")
    stale_after_s: float = setting(60.0, minimum=0.1, help="no frame for this long -> reconnect (staleness watchdog)")
    ping_interval_s: float = setting(10.0, minimum=0, help="WebSocket ping interval (0 = no pings)")
    ping_timeout_s: float = setting(20.0, minimum=0.1, help="close if a WebSocket pong takes longer")
    backoff_initial_s: float = setting(0.5, minimum=0.001, help="first reconnect delay ceiling (full jitter below it)")
    backoff_max_s: float = setting(30.0, minimum=0.001, help="cap of the reconnect delay ceiling")
    stable_after_s: float = setting(10.0, minimum=0, help="a session this long resets the backoff")
    auth_retry_min_s: float = setting(30.0, minimum=0.1, help="least delay after a permanent auth failure")
    auth_retry_max_s: float = setting(600.0, minimum=0.1, help="cap of the delay after repeated auth failures")
    unsubscribe_timeout_s: float = setting(3.0, minimum=0, help="time allowed to unsubscribe on shutdown")
    declare_topics: bool = setting(True, help="create the catalogue's missing topics at start-up (needs the "
                                              "CreateTopics permission; off where a deployment job does it)")
    resume_seq: bool = setting(True, help="continue tp-seq after the last record of this connection id in Kafka")
    resume_timeout_s: float = setting(15.0, minimum=0.1, help="time allowed to find that last tp-seq at startup")
    ws_max_queue: int = setting(1024, minimum=1, help="frames the websocket library may hold unread; it keeps reading "
                                                       "(and answering pings) during a read pause until then")
    max_frame_bytes: int = setting(16 * 1024 * 1024, minimum=1024, help="largest frame accepted from the feed")
    # --- Kafka sink ---
    buffer_max_frames: int = setting(100_000, minimum=1, help="bound of the produce buffer, in records")
    buffer_max_bytes: int = setting(256 * 1024 * 1024, minimum=1024, help="bound of the produce buffer, in bytes")
    pause_at_fill: float = setting(0.5, minimum=0.01, maximum=1.0, help="stop reading the feed at this buffer fill")
    resume_at_fill: float = setting(0.25, minimum=0.0, maximum=1.0, help="read again once the fill is down to this")
    max_pause_s: float = setting(10.0, minimum=0, help="longest read pause, then read on and drop oldest past the bound "
                                                       "(keep it below ping_timeout_s)")
    linger_ms: int = setting(20, minimum=0, help="Kafka producer batching delay")
    batch_size: int = setting(256 * 1024, minimum=1024, help="Kafka producer batch size in bytes")
    compression: str = setting("zstd", choices=COMPRESSION, help="Kafka compression (snappy/lz4/zstd use cramjam, a dependency)")
    request_timeout_ms: int = setting(15_000, minimum=100, help="Kafka request timeout; a failed batch is retried")
    max_request_bytes: int = setting(32 * 1024 * 1024, minimum=1024, help="largest Kafka produce request")
    chunk_records: int = setting(1000, minimum=1, help="records handed to the Kafka client per round")
    flush_timeout_s: float = setting(15.0, minimum=0, help="time allowed to flush on shutdown")

    def __post_init__(self) -> None:
        if self.resume_at_fill >= self.pause_at_fill:
            raise ConfigError(f"TICKPIPE_PRODUCER_RESUME_AT_FILL: must be below TICKPIPE_PRODUCER_PAUSE_AT_FILL "
                              f"({self.pause_at_fill}), got {self.resume_at_fill}")
        if self.backoff_initial_s > self.backoff_max_s or self.auth_retry_min_s > self.auth_retry_max_s:
            raise ConfigError("TICKPIPE_PRODUCER_BACKOFF_INITIAL_S / AUTH_RETRY_MIN_S: must not exceed their maximum")


def loop_settings_for(adapter_cls, file_data: Mapping | None = None, env: Mapping[str, str] | None = None) -> ProducerSettings:
    """Section ``producer`` with the adapter's ``loop_defaults`` in place of the built-in defaults.

    Precedence, lowest first: built-in default, ``adapter_cls.loop_defaults``, ``--config`` file, environment.
    """
    env = os.environ if env is None else env
    settings = load_section(ProducerSettings, SECTION, file_data=file_data, env=env)
    configured = set((file_data or {}).get(SECTION) or {})
    kept = {name: value for name, value in (getattr(adapter_cls, "loop_defaults", None) or {}).items()
            if env_name(SECTION, name) not in env and name not in configured and name.replace("_", "-") not in configured}
    if not kept:
        return settings
    return load_section(ProducerSettings, SECTION, file_data=file_data, env=env, overrides=kept)
