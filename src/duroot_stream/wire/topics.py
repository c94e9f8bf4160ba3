"""The one module that knows topic names and their configurations."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from duroot_stream.config import KafkaConfig

DEFAULT_PARTITIONS = 6
ADMIN_TIMEOUT_S = 30.0


class TopicRole(Enum):
    COMMANDS = "commands"
    EVENTS = "events"
    INDEX = "index"
    REPLIES = "replies"
    DLQ = "commands.dlq"


@dataclass(frozen=True)
class TopicSpec:
    role: TopicRole
    cleanup_policy: str
    configs: Mapping[str, str]
    partitioned_like_commands: bool  # partition count follows `--partitions`


DAY_MS = 24 * 3600 * 1000

SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(TopicRole.COMMANDS, "delete", {"retention.ms": str(7 * DAY_MS)}, True),
    # Keys are unique per event, so compaction only ever drops tombstoned history.
    TopicSpec(TopicRole.EVENTS, "compact", {"min.cleanable.dirty.ratio": "0.1"}, True),
    TopicSpec(TopicRole.INDEX, "compact", {"min.cleanable.dirty.ratio": "0.1"}, True),
    TopicSpec(TopicRole.REPLIES, "delete", {"retention.ms": str(DAY_MS)}, True),
    TopicSpec(TopicRole.DLQ, "delete", {"retention.ms": str(30 * DAY_MS)}, False),
)


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix (default `duroot.`)."""

    prefix: str

    @property
    def commands(self) -> str:
        return self.name(TopicRole.COMMANDS)

    @property
    def events(self) -> str:
        return self.name(TopicRole.EVENTS)

    @property
    def index(self) -> str:
        return self.name(TopicRole.INDEX)

    @property
    def replies(self) -> str:
        return self.name(TopicRole.REPLIES)

    @property
    def dlq(self) -> str:
        return self.name(TopicRole.DLQ)

    def name(self, role: TopicRole) -> str:
        return f"{self.prefix}{role.value}"


class TopicCheckError(Exception):
    """A deployment's topics do not match DESIGN.md; the message says which and how."""


def admin(config: KafkaConfig) -> AdminClient:
    return AdminClient(config.client())


def create_topics(
    config: KafkaConfig,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int = 1,
    extra_configs: Mapping[str, str] | None = None,
) -> list[str]:
    """Create the five topics; existing ones are left as they are. Returns those created."""
    topics = Topics(config.topic_prefix)
    client = admin(config)
    new = [
        NewTopic(
            topics.name(spec.role),
            num_partitions=partitions if spec.partitioned_like_commands else 1,
            replication_factor=replication_factor,
            config={
                "cleanup.policy": spec.cleanup_policy,
                **spec.configs,
                **(extra_configs or {}),
            },
        )
        for spec in SPECS
    ]
    created = []
    for name, future in client.create_topics(new, request_timeout=ADMIN_TIMEOUT_S).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    wait_visible(client, [t.topic for t in new])
    return created


def wait_visible(client: AdminClient, names: list[str]) -> None:
    """Creation returns before every broker's metadata shows the topic: wait for it."""
    deadline = time.monotonic() + ADMIN_TIMEOUT_S
    while len(partition_counts(client, names)) < len(names):
        if time.monotonic() > deadline:
            raise TopicCheckError(
                f"topics {names} not visible {ADMIN_TIMEOUT_S:.0f} s after creation"
            )
        time.sleep(0.1)


def partition_counts(client: AdminClient, names: list[str]) -> dict[str, int]:
    md = client.list_topics(timeout=ADMIN_TIMEOUT_S)
    return {
        n: len(md.topics[n].partitions) for n in names if n in md.topics and not md.topics[n].error
    }


def check_topics(config: KafkaConfig) -> dict[str, int]:
    """Verify the deployment; raises TopicCheckError naming the topic and setting."""
    topics = Topics(config.topic_prefix)
    names = [topics.name(spec.role) for spec in SPECS]
    # Keep the client alive until every future has its result.
    client = admin(config)
    counts = partition_counts(client, names)
    problems = [
        f"topic {n} is missing (create it with `duroot-stream topics create`)"
        for n in names
        if n not in counts
    ]
    commands, events = counts.get(topics.commands), counts.get(topics.events)
    if commands is not None and events is not None and commands != events:
        problems.append(
            f"partitions: {topics.commands} has {commands} but {topics.events} has {events}; "
            "they must be equal (events are co-partitioned with commands)"
        )
    present = [spec for spec in SPECS if topics.name(spec.role) in counts]
    resources = [ConfigResource("topic", topics.name(spec.role)) for spec in present]
    if resources:
        described = client.describe_configs(resources, request_timeout=ADMIN_TIMEOUT_S)
        for spec, resource in zip(present, resources, strict=True):
            entries = described[resource].result()
            policy = entries["cleanup.policy"].value
            if policy != spec.cleanup_policy:
                problems.append(
                    f"cleanup.policy: topic {topics.name(spec.role)} has {policy!r}, "
                    f"expected {spec.cleanup_policy!r}"
                )
    if problems:
        raise TopicCheckError("; ".join(problems))
    return counts
