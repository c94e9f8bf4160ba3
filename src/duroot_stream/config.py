"""Settings shared by every role: where Kafka is, topic names, librdkafka passthrough.

librdkafka settings come from a properties file (`-F FILE` or `DUROOT_KAFKA_CONFIG`,
as kcat takes it) with `-X key=value` on top, so passwords need not be on a command
line. Secret values never leave this module in text: `repr(KafkaConfig)` redacts them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duroot_stream.logs import librdkafka_logger

DEFAULT_BOOTSTRAP_SERVERS = "127.0.0.1:9092"
DEFAULT_TOPIC_PREFIX = "duroot."
REDACTED = "[redacted]"

# librdkafka's secret-bearing settings: sasl.password, ssl.key.password,
# ssl.keystore.password, ssl.key.pem, sasl.oauthbearer.client.secret,
# sasl.oauthbearer.config (may embed a secret), and any JAAS text.
_SECRET_KEY = re.compile(r"password|secret|jaas|^ssl\.key\.pem$|^ssl_key$|oauthbearer\.config")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it (never a secret's value)."""


def is_secret(key: str) -> bool:
    return bool(_SECRET_KEY.search(key.lower()))


def redacted(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` with every secret value replaced, for messages and logs."""
    return {k: REDACTED if is_secret(k) else v for k, v in settings.items()}


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """`-X key=value` pairs, as kcat takes them."""
    overrides: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            shown = key if sep else item
            shown = REDACTED if is_secret(shown) else shown
            raise ConfigError(f"-X {shown!r}: expected key=value (a librdkafka setting)")
        overrides[key.strip()] = value
    return overrides


def read_properties(path: str | os.PathLike[str]) -> dict[str, str]:
    """A librdkafka properties file: `key=value` lines, `#` comments, blank lines."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Kafka config file {path}: {exc.strerror or exc}") from None
    settings: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            # The line may be a password on its own: name the line, not its text.
            raise ConfigError(f"Kafka config file {path}, line {number}: expected key=value")
        settings[key.strip()] = value.strip()
    return settings


def _redact_url(url: str | None) -> str | None:
    return None if url is None else re.sub(r"//[^/@]*@", f"//{REDACTED}@", url)


@dataclass(frozen=True)
class KafkaConfig:
    """How to reach Kafka; flags override `DUROOT_*` environment variables."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP_SERVERS
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    schema_registry_url: str | None = None
    overrides: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(
        cls,
        *,
        bootstrap_servers: str | None = None,
        topic_prefix: str | None = None,
        schema_registry_url: str | None = None,
        overrides: Mapping[str, str] | None = None,
        config_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> KafkaConfig:
        """`config_file` (else `$DUROOT_KAFKA_CONFIG`) under `overrides` (`-X`)."""
        env = os.environ if env is None else env
        path = config_file or env.get("DUROOT_KAFKA_CONFIG") or None
        from_file = read_properties(path) if path else {}
        # bootstrap.servers may live in the file, as for kcat; a flag or the
        # environment still wins.
        file_bootstrap = from_file.pop("bootstrap.servers", None)
        return cls(
            bootstrap_servers=bootstrap_servers
            or env.get("DUROOT_BOOTSTRAP_SERVERS")
            or file_bootstrap
            or DEFAULT_BOOTSTRAP_SERVERS,
            topic_prefix=topic_prefix
            if topic_prefix is not None
            else env.get("DUROOT_TOPIC_PREFIX", DEFAULT_TOPIC_PREFIX),
            schema_registry_url=schema_registry_url
            or env.get("DUROOT_SCHEMA_REGISTRY_URL")
            or None,
            overrides={**from_file, **(overrides or {})},
        )

    def client(self, **settings: Any) -> dict[str, Any]:
        """librdkafka settings for one client: ours, then the user's file and `-X` on top.

        librdkafka's own log lines go through the project's logging (logger `librdkafka`)."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        conf["logger"] = librdkafka_logger()
        conf.update(settings)
        conf.update(self.overrides)
        return conf

    def __repr__(self) -> str:
        return (
            f"KafkaConfig(bootstrap_servers={self.bootstrap_servers!r}, "
            f"topic_prefix={self.topic_prefix!r}, "
            f"schema_registry_url={_redact_url(self.schema_registry_url)!r}, "
            f"overrides={redacted(self.overrides)!r})"
        )

    __str__ = __repr__
