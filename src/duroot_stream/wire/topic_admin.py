"""The topics on a cluster: create them, and check a deployment against `topics.py`.

Replication follows the cluster: by default a topic gets `min(3, brokers)`
replicas and `min.insync.replicas` 2 when it has three or more (so one broker
may fail without losing a write the processor committed), else 1. `check`
names the topic and the setting that is wrong, and says what to do.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from duroot_stream.config import KafkaConfig

from .topics import DEFAULT_PARTITIONS, Partitioning, Topic, Topics

ADMIN_TIMEOUT_S = 30.0


class TopicCheckError(Exception):
    """A deployment's topics do not match the contract; the message says which and how."""


class Replication(NamedTuple):
    factor: int
    min_insync: int

    @classmethod
    def for_brokers(cls, brokers: int) -> Replication:
        factor = max(1, min(3, brokers))
        return cls(factor, 2 if factor >= 3 else 1)


def admin(config: KafkaConfig) -> AdminClient:
    return AdminClient(config.client())


def broker_count(client: AdminClient) -> int:
    return len(client.list_topics(timeout=ADMIN_TIMEOUT_S).brokers)


def create_topics(
    config: KafkaConfig,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
    extra_configs: Mapping[str, str] | None = None,
) -> list[str]:
    """Create the six topics; existing ones are left as they are. Returns those created.
    Replication defaults from the cluster's broker count (see the module docstring)."""
    client = admin(config)
    factor = replication_factor or Replication.for_brokers(broker_count(client)).factor
    replication = Replication(
        factor, min_insync_replicas or Replication.for_brokers(factor).min_insync
    )
    if replication.min_insync > replication.factor:
        raise TopicCheckError(
            f"min.insync.replicas {replication.min_insync} is more than the replication "
            f"factor {replication.factor}: no write could ever succeed"
        )
    new = [
        NewTopic(
            t.name,
            num_partitions=t.partitions_for(partitions),
            replication_factor=replication.factor,
            config={
                **t.all_configs(extra_configs),
                "min.insync.replicas": str(replication.min_insync),
            },
        )
        for t in Topics(config.topic_prefix).all()
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


def partition_counts(
    client: AdminClient | Consumer, names: list[str], timeout: float = ADMIN_TIMEOUT_S
) -> dict[str, int]:
    """The partition count of each of `names` that exists."""
    md = client.list_topics(timeout=timeout)
    return {
        n: len(md.topics[n].partitions) for n in names if n in md.topics and not md.topics[n].error
    }


def partition_problems(
    topics: Topics, counts: Mapping[str, int], expected: int | None = None
) -> list[str]:
    """What is wrong with a deployment's partition counts (`counts` by topic
    name, a missing topic absent): missing topics, and workflow-keyed topics
    whose counts differ from each other or from `expected`."""
    problems = [
        f"topic {t.name} is missing (create it with `duroot-stream topics create`)"
        for t in topics.all()
        if t.name not in counts
    ]
    keyed = [
        (t.name, counts[t.name])
        for t in topics.all()
        if t.partitioning is Partitioning.BY_WORKFLOW and t.name in counts
    ]
    found = {n for _, n in keyed}
    if len(found) > 1 or (expected is not None and found and found != {expected}):
        have = ", ".join(f"{name} has {n}" for name, n in keyed)
        want = "must be equal" if expected is None else f"must all be {expected}"
        problems.append(
            f"partitions: {have}; they {want}: a workflow's partition is "
            "murmur2(workflow id) % N in each (events go to their command's partition), "
            "so N can never change once the topics hold data; recreate the topics with "
            "one count, or use the count they have"
        )
    return problems


def check_partitions(
    topics: Topics, counts: Mapping[str, int], expected: int | None = None
) -> None:
    """Refuse (TopicCheckError) what `partition_problems` finds."""
    problems = partition_problems(topics, counts, expected)
    if problems:
        raise TopicCheckError("; ".join(problems))


def start_partition_counts(client: Consumer, topics: Topics, timeout: float) -> dict[str, int]:
    """The partition count of each topic, read as the processor starts; refused
    (`check_partitions`) when one is missing or commands, events, index and state
    differ."""
    counts = partition_counts(client, [t.name for t in topics.all()], timeout)
    check_partitions(topics, counts)
    return counts


def _config_problems(t: Topic[Any, Any], configs: Mapping[str, str], min_isr: int) -> list[str]:
    problems = []
    policy = configs.get("cleanup.policy")
    if policy != t.cleanup_policy:
        problems.append(
            f"cleanup.policy: topic {t.name} has {policy!r}, expected {t.cleanup_policy!r}"
        )
    wanted = t.configs.get("retention.ms")
    have = configs.get("retention.ms", "")
    # -1 keeps forever; otherwise at least what the contract promises readers.
    if wanted is not None and have.lstrip("-").isdigit() and -1 != int(have) < int(wanted):
        problems.append(
            f"retention.ms: topic {t.name} keeps records {int(have) // 1000} s, expected at "
            f"least {int(wanted) // 1000} s (`kafka-configs --alter --add-config "
            f"retention.ms={wanted}`)"
        )
    isr = configs.get("min.insync.replicas", "")
    if isr.isdigit() and int(isr) < min_isr:
        problems.append(
            f"min.insync.replicas: topic {t.name} has {isr}, expected at least {min_isr} "
            "(a committed transaction must survive a broker's loss)"
        )
    return problems


def check_topics(
    config: KafkaConfig,
    partitions: int | None = None,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
) -> dict[str, int]:
    """Verify the deployment: every topic there, partition counts (equal, and
    `partitions` if given), cleanup policy, retention, replication factor and
    `min.insync.replicas` (given, or as `create_topics` would choose them for this
    cluster). Raises TopicCheckError naming each topic and setting that is wrong."""
    topics = Topics(config.topic_prefix)
    # Keep the client alive until every future has its result.
    client = admin(config)
    md = client.list_topics(timeout=ADMIN_TIMEOUT_S)
    factor = replication_factor or Replication.for_brokers(len(md.brokers)).factor
    min_isr = min_insync_replicas or Replication.for_brokers(factor).min_insync
    counts = partition_counts(client, [t.name for t in topics.all()])
    problems = partition_problems(topics, counts, partitions)
    present = [t for t in topics.all() if t.name in counts]
    for t in present:
        replicas = min(len(p.replicas) for p in md.topics[t.name].partitions.values())
        if replicas < factor:
            problems.append(
                f"replication factor: topic {t.name} has {replicas} replicas, expected {factor} "
                "(recreate it, or add replicas with kafka-reassign-partitions)"
            )
    resources = [ConfigResource("topic", t.name) for t in present]
    if resources:
        described = client.describe_configs(resources, request_timeout=ADMIN_TIMEOUT_S)
        for t, resource in zip(present, resources, strict=True):
            entries = described[resource].result()
            configs = {name: entry.value for name, entry in entries.items()}
            problems += _config_problems(t, configs, min_isr)
    if problems:
        raise TopicCheckError("; ".join(problems))
    return counts
