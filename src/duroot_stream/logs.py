"""Structured logging: `key=value` text for people, one JSON object per line for machines.

librdkafka's own log lines (`%4|...|GETPID|...`) come here too, through the `logger`
setting every client gets (`KafkaConfig.client`): logger `librdkafka`, at librdkafka's
level, with the facility and the client's name as fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} "
        line += f"{record.levelname.lower():5} {record.name}: {record.getMessage()}"
        if extra:
            line += f" {extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


LIBRDKAFKA_LOGGER = "librdkafka"


class _LibrdkafkaLog:
    """What confluent-kafka calls for each librdkafka log line: `log(level, fmt, fac, name, text)`,
    the level already mapped from syslog's to `logging`'s."""

    def __init__(self) -> None:
        self._log = logging.getLogger(LIBRDKAFKA_LOGGER)

    def log(self, level: int, fmt: str, facility: str, client: str, text: str, *_: Any) -> None:
        # A condition librdkafka retries by itself (a coordinator still loading,
        # on every first transaction) is not the operator's to act on.
        if level == logging.WARNING and text.endswith(": retrying"):
            level = logging.INFO
        if self._log.isEnabledFor(level):
            # "[thrd:main]: " says which librdkafka thread: noise in a structured line.
            message = text.split("]: ", 1)[1] if text.startswith("[thrd:") else text
            self._log.log(level, message, extra={"facility": facility, "client": client})


_LIBRDKAFKA = _LibrdkafkaLog()


def librdkafka_logger() -> Any:
    """The object for librdkafka's `logger` setting."""
    return _LIBRDKAFKA


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
