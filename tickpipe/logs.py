"""Structured logging: one JSON object per line when stdout is not a TTY, readable text otherwise.

    log = get_logger("tickpipe.producer")
    log.info("connected", provider="alpaca", url=url)

Every line passes through :func:`tickpipe.config.redact`, so a secret value that slips
into a message or a field is masked before it is written.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from tickpipe.config import redact

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(doc, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}" + (f"  {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}


class StructuredLogger:
    """A thin wrapper: ``log.info(event, **fields)``."""

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(self, level: int, event: str, fields: dict[str, Any], exc_info: Any = None) -> None:
        if self._logger.isEnabledFor(level):
            safe = {k if k not in _RESERVED else f"{k}_": v for k, v in fields.items()}
            self._logger.log(level, event, extra=safe, exc_info=exc_info, stacklevel=3)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields, exc_info=True)


def get_logger(name: str) -> StructuredLogger:
    return StructuredLogger(logging.getLogger(name))


def setup_logging(level: str = "INFO", json_format: bool | None = None, stream=None) -> None:
    """Configure the root logger once per process. ``json_format=None`` means: JSON unless a TTY."""
    stream = stream or sys.stderr
    if json_format is None:
        json_format = not (hasattr(sys.stdout, "isatty") and sys.stdout.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "websockets", "asyncio", "engineio", "socketio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
