"""The Faust app of ``tickpipe process``: one loop per provider, ``raw.<provider>`` -> clean topics.

Each loop takes whole fetched batches of raw records (``processors/fastpath.py``, past Faust's
per-event path), runs them through the provider's
:class:`~tickpipe.processors.pipeline.Pipeline` (normalize -> integrity checks
-> Avro encode) and produces ticks (key: instrument), gap alerts and dead letters with
Faust's producer (acks=all, no idempotence: at-least-once, and Tansu cannot do
InitProducerId). The batch's offsets are acked only after its outputs are delivered.

Topics are declared from the catalogue (``tickpipe.admin.declare_topics``) before start;
Faust itself declares nothing (``topic_allow_declare=False``, no leader topic, no tables
yet).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

from tickpipe.avro import AvroEncoder
from tickpipe.config import ConfigError, setting
from tickpipe.fetchwait import govern_fetch_wait
from tickpipe.kafka import KafkaSettings, client_kwargs, faust_broker_options
from tickpipe.logs import get_logger
from tickpipe.processors.batch import BatchProcessor
from tickpipe.processors.end_offsets import read_ends_from_the_log
from tickpipe.processors.normalizers import load_normalizer
from tickpipe.processors.normalizers.state import NormalizerState
from tickpipe.processors.pipeline import Pipeline
from tickpipe.processors.statewrites import StateWrites
from tickpipe.topics import TopicSettings, raw_topic

log = get_logger("tickpipe.processors.app")

# A state-table value holds a connection's reorder window: it can pass Kafka's default 1 MB limit,
# so Faust's producer and the changelog topics (max.message.bytes) both allow this much.
STATE_MAX_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class ProcessorSettings:
    """Section ``processor``: the Faust app."""

    app_id: str = setting("tickpipe-processor", help="Faust app id = consumer group id")
    batch_max: int = setting(1000, minimum=1, help="raw records per batch at most")
    batch_within_s: float = setting(0.01, minimum=0.001, help="wait at most this long to fill a batch")
    session_timeout_s: float = setting(30.0, minimum=1, help="consumer group session timeout (tests: 6)")
    heartbeat_interval_s: float = setting(3.0, minimum=0.1, help="consumer group heartbeat interval (tests: 1)")
    commit_interval_s: float = setting(1.0, minimum=0.1, help="how often acked offsets are committed")
    tick_interval_s: float = setting(1.0, minimum=0.05, help="how often time-based checks run (integrity windows, staleness)")
    fetch_max_wait_ms: int = setting(10, minimum=1, help="longest a consumer fetch waits for data (Faust fixes 1500; "
                                                            "a broker that holds every fetch that long, like Tansu, "
                                                            "adds it to the tick latency)")
    auto_offset_reset: str = setting("earliest", choices=("earliest", "latest"),
                                     help="where a new consumer group starts in the raw topics")
    data_dir: str = setting("", help="Faust data directory (default: a temporary directory)")
    producer_request_timeout_s: float = setting(1200.0, minimum=0.1, help="how long a produce (outputs, state "
                                                "writes) is retried before it fails (Faust's default)")
    fault_kill_after_batches: int = setting(0, minimum=0, help="fault injection for reliability tests: SIGKILL "
                                            "this process right after the N-th batch with clean records has them acknowledged, "
                                            "before its state is saved (0: never)")
    normalizers: str = setting("", help="provider=module:callable,... replacing built-in normalizers "
                                        "(a site's own normalizer, or a test's)")

    def normalizer_overrides(self) -> dict[str, str]:
        from tickpipe.processors.normalizers import parse_overrides

        try:
            return parse_overrides(self.normalizers)
        except ValueError as exc:
            raise ConfigError(f"TICKPIPE_PROCESSOR_NORMALIZERS: {exc}") from None


def build_app(kafka: KafkaSettings, settings: ProcessorSettings, providers: list[str],
              topic_settings: TopicSettings = TopicSettings(), encoder: AvroEncoder | None = None,
              checks_factory=None):
    """A Faust app with one normalizing agent per provider.

    ``checks_factory(provider, store) -> list[FrameCheck]`` plugs in the integrity stage;
    ``store`` is the provider's Faust table (changelog-backed, keyed like the raw topic by
    connection id, so it is co-partitioned with it) where checks keep their state. The
    normalizer's state (``Frame.recall``/``remember``) has a table of its own.
    """
    import faust

    app = faust.App(
        settings.app_id,
        **faust_broker_options(kafka),
        autodiscover=False,
        datadir=settings.data_dir or tempfile.mkdtemp(prefix="tickpipe-faust-"),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        processing_guarantee="at_least_once",
        producer_acks=-1,
        # a state table's value holds a connection's reorder window: past Faust's 1 MB default, its
        # changelog write crashed the app (MessageSizeTooLargeError); the producers' request bound
        producer_max_request_size=STATE_MAX_BYTES,
        topic_partitions=topic_settings.raw_partitions,
        topic_replication_factor=kafka.replication_factor,
        topic_allow_declare=False,
        topic_disable_leader=True,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_interval=settings.commit_interval_s,
        consumer_auto_offset_reset=settings.auto_offset_reset,
        web_enabled=False,
        producer_request_timeout=settings.producer_request_timeout_s,
    )
    _limit_fetch_wait(app, settings.fetch_max_wait_ms)
    read_ends_from_the_log(app, client_kwargs(kafka), settings.fetch_max_wait_ms)
    encoder = encoder or AvroEncoder()
    overrides = settings.normalizer_overrides()
    app.tickpipe_processors = {}
    for provider in providers:
        state_writes = StateWrites()
        checks = () if not checks_factory else \
            checks_factory(provider, state_writes.track(_state_table(app, state_table_name(provider), topic_settings)))
        state = NormalizerState(state_writes.track(_state_table(app, normalizer_table_name(provider), topic_settings)))
        pipeline = Pipeline(provider, load_normalizer(provider, overrides), encoder, state=state, checks=checks)
        redelivery = dict(client_kwargs=client_kwargs(kafka), fetch_max_wait_ms=settings.fetch_max_wait_ms) \
            if checks_factory else None
        processor = BatchProcessor(pipeline, app.producer, kafka.topic_prefix, redelivery_settings=redelivery,
                                   kill_after_batches=settings.fault_kill_after_batches, state_writes=state_writes)
        app.tickpipe_processors[provider] = processor
        topic = app.topic(raw_topic(provider, kafka.topic_prefix), key_serializer="raw", value_serializer="raw",
                          partitions=topic_settings.raw_partitions)
        _agent(app, topic, processor, settings)
        if any(hasattr(check, "tick") for check in checks):
            app.timer(settings.tick_interval_s, name=f"tick-{provider}")(processor.tick)

    async def forget_moved_state(*_args, **_kwargs) -> None:
        for processor in app.tickpipe_processors.values():
            processor.pipeline.state.forget()
            for check in processor.pipeline.checks:
                getattr(check, "forget", lambda: None)()

    app.on_partitions_revoked.connect(forget_moved_state)
    return app


def _limit_fetch_wait(app, fetch_max_wait_ms: int) -> None:
    """Faust builds its worker consumer with ``fetch_max_wait_ms=1500`` (no setting): set ours on
    the aiokafka consumer before it starts (it reads the value when it builds its fetcher), and
    let it grow if the broker starves the consumer (:mod:`tickpipe.fetchwait`)."""
    thread = getattr(app.consumer, "_thread", None)
    create = getattr(thread, "_create_worker_consumer", None)
    if create is None:  # another Faust driver: keep its own wait
        return

    def create_with_our_wait(transport):
        consumer = create(transport)
        consumer._fetch_max_wait_ms = fetch_max_wait_ms
        start = consumer.start

        async def start_and_govern_the_wait():
            await start()
            govern_fetch_wait(consumer, "processor")

        consumer.start = start_and_govern_the_wait
        return consumer

    thread._create_worker_consumer = create_with_our_wait


def state_table_name(provider: str) -> str:
    return f"integrity-{provider}"


def normalizer_table_name(provider: str) -> str:
    return f"normalizer-{provider}"


def changelog_topics(settings: ProcessorSettings, providers: list[str], topic_settings: TopicSettings,
                     prefix: str = "") -> list:
    """The changelog topics of the state tables (Faust declares nothing here: we create them)."""
    from tickpipe.topics import TopicSpec

    return [TopicSpec(f"{settings.app_id}-{table(p)}-changelog", topic_settings.raw_partitions,
                      topic_settings.raw_retention_ms, cleanup_policy="compact", purpose=f"{what} state of {p}",
                      max_message_bytes=STATE_MAX_BYTES)
            for p in providers for table, what in ((state_table_name, "integrity"), (normalizer_table_name, "normalizer"))]


def _state_table(app, name: str, topic_settings: TopicSettings):
    return app.Table(name, partitions=topic_settings.raw_partitions, use_partitioner=True,
                     key_type=bytes, value_type=bytes, default=None)  # bytes: the "raw" codec


def _agent(app, topic, processor: BatchProcessor, settings: ProcessorSettings) -> None:
    """The provider's consumption loop: its raw topic in whole fetched batches of up to ``batch_max``
    records (waiting at most ``batch_within_s`` to fill one), past Faust's per-event path
    (``processors/fastpath.py``); offsets are acked after ``processor.process`` returns."""
    from tickpipe.processors.fastpath import RawBatchConsumption

    RawBatchConsumption.of(app, settings.batch_max, settings.batch_within_s).consume(topic, processor)
