"""tickpipe: Kafka-based stream processing for real-time market data."""

__version__ = "0.1.0"
