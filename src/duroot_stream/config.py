"""Settings shared by every role: where Kafka is, topic names, librdkafka passthrough."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BOOTSTRAP_SERVERS = "127.0.0.1:9092"
DEFAULT_TOPIC_PREFIX = "duroot."


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """`-X key=value` pairs, as kcat takes them."""
    overrides: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-X {item!r}: expected key=value (a librdkafka setting)")
        overrides[key.strip()] = value
    return overrides


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
        env: Mapping[str, str] | None = None,
    ) -> KafkaConfig:
        env = os.environ if env is None else env
        return cls(
            bootstrap_servers=bootstrap_servers
            or env.get("DUROOT_BOOTSTRAP_SERVERS")
            or DEFAULT_BOOTSTRAP_SERVERS,
            topic_prefix=topic_prefix
            if topic_prefix is not None
            else env.get("DUROOT_TOPIC_PREFIX", DEFAULT_TOPIC_PREFIX),
            schema_registry_url=schema_registry_url
            or env.get("DUROOT_SCHEMA_REGISTRY_URL")
            or None,
            overrides=dict(overrides or {}),
        )

    def client(self, **settings: Any) -> dict[str, Any]:
        """librdkafka settings for one client: ours, then the user's `-X` on top."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        conf.update(settings)
        conf.update(self.overrides)
        return conf
