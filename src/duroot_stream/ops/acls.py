"""Least privilege: the ACLs each principal needs, as data; printed for Kafka's CLI or
applied through the admin API.

- processor: READ commands, events, state; WRITE events, index, state, replies,
  commands.dlq;
  READ groups duroot-processor, duroot-restore; WRITE transactional ids duroot-processor-*
- runner: READ index, events (a workflow's state), replies; WRITE commands;
  READ groups duroot-runner-*, duroot-reader-*
- requester: WRITE commands; READ replies; READ groups duroot-reader-*
- reader: READ events, index; READ groups duroot-reader-*
- exporter: READ events; READ groups duroot-reader-*
- scheduler: WRITE commands; READ replies, index; READ groups duroot-reader-*

READ and WRITE imply DESCRIBE (metadata, partition counts). An idempotent producer
needs no cluster ACL: WRITE on a topic allows it (Kafka >= 2.8). Readers and the
requester's reply consumer use groups `duroot-reader-<uuid>` they never join or commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from duroot_stream.config import KafkaConfig
from duroot_stream.wire import Topics

ADMIN_TIMEOUT_S = 30.0
PROCESSOR_GROUP = "duroot-processor"
RESTORE_GROUP = "duroot-restore"
RUNNER_GROUP_PREFIX = "duroot-runner-"
READER_GROUP_PREFIX = "duroot-reader-"


class Role(Enum):
    PROCESSOR = "processor"
    RUNNER = "runner"
    REQUESTER = "requester"
    READER = "reader"
    EXPORTER = "exporter"
    SCHEDULER = "scheduler"


class Resource(Enum):
    TOPIC = "topic"
    GROUP = "group"
    TRANSACTIONAL_ID = "transactional-id"


class Operation(Enum):
    READ = "Read"
    WRITE = "Write"


@dataclass(frozen=True)
class Acl:
    """One ALLOW rule: `principal` may `operation` on `resource` `name` (a prefix if `prefixed`)."""

    role: Role
    principal: str
    resource: Resource
    name: str
    operation: Operation
    prefixed: bool = False


class AclError(RuntimeError):
    """The admin API refused or failed to create an ACL; the message names it."""


def principal(text: str) -> str:
    """`alice` -> `User:alice`; `User:alice` as given."""
    return text if ":" in text else f"User:{text}"


def _needs(
    topics: Topics, processor_group: str
) -> dict[Role, list[tuple[Resource, str, Operation, bool]]]:
    t, g, w, r = Resource.TOPIC, Resource.GROUP, Operation.WRITE, Operation.READ
    reply_reader = [(t, topics.replies, r, False), (g, READER_GROUP_PREFIX, r, True)]
    return {
        Role.PROCESSOR: [
            (t, topics.commands, r, False),
            (t, topics.events, r, False),
            (t, topics.events, w, False),
            (t, topics.index, w, False),
            (t, topics.state, r, False),
            (t, topics.state, w, False),
            (t, topics.replies, w, False),
            (t, topics.dlq, w, False),
            (g, processor_group, r, False),
            (g, RESTORE_GROUP, r, False),
            (Resource.TRANSACTIONAL_ID, f"{processor_group}-", w, True),
        ],
        Role.RUNNER: [
            (t, topics.index, r, False),
            (t, topics.events, r, False),
            (g, RUNNER_GROUP_PREFIX, r, True),
            (t, topics.commands, w, False),
            *reply_reader,
        ],
        Role.REQUESTER: [(t, topics.commands, w, False), *reply_reader],
        Role.READER: [
            (t, topics.events, r, False),
            (t, topics.index, r, False),
            (g, READER_GROUP_PREFIX, r, True),
        ],
        # The exporter reads the events topic only: it carries every fact it serves.
        Role.EXPORTER: [(t, topics.events, r, False), (g, READER_GROUP_PREFIX, r, True)],
        # The scheduler reads the index (is a root's last run still active?) and begins.
        Role.SCHEDULER: [
            (t, topics.commands, w, False),
            (t, topics.index, r, False),
            *reply_reader,
        ],
    }


def required_acls(
    topic_prefix: str,
    principals: Mapping[Role, Sequence[str]],
    processor_group: str = PROCESSOR_GROUP,
) -> list[Acl]:
    """The minimal ACLs for the given principals of each role (a role may have none)."""
    needs = _needs(Topics(topic_prefix), processor_group)
    return [
        Acl(role, principal(who), resource, name, operation, prefixed)
        for role, whos in principals.items()
        for who in whos
        for resource, name, operation, prefixed in needs[role]
    ]


def kafka_acls_command(acl: Acl, bootstrap: str = "$BOOTSTRAP") -> str:
    """`kafka-acls.sh` arguments that add `acl`, as Kafka's own CLI takes them."""
    parts = [
        "kafka-acls.sh",
        f"--bootstrap-server {bootstrap}",
        "--command-config admin.properties",
        "--add",
        f"--allow-principal {acl.principal}",
        f"--operation {acl.operation.value}",
        f"--{acl.resource.value} {acl.name}",
    ]
    if acl.prefixed:
        parts.append("--resource-pattern-type prefixed")
    return " ".join(parts)


_RESOURCE = {
    Resource.TOPIC: ResourceType.TOPIC,
    Resource.GROUP: ResourceType.GROUP,
    Resource.TRANSACTIONAL_ID: ResourceType.TRANSACTIONAL_ID,
}
_OPERATION = {Operation.READ: AclOperation.READ, Operation.WRITE: AclOperation.WRITE}


def binding(acl: Acl) -> AclBinding:
    return AclBinding(
        _RESOURCE[acl.resource],
        acl.name,
        ResourcePatternType.PREFIXED if acl.prefixed else ResourcePatternType.LITERAL,
        acl.principal,
        "*",
        _OPERATION[acl.operation],
        AclPermissionType.ALLOW,
    )


def apply_acls(config: KafkaConfig, acls: Iterable[Acl]) -> int:
    """Create `acls` through the admin API (creating one that exists is a no-op);
    returns how many were sent. Raises `AclError` naming the first that failed."""
    wanted = {binding(acl): acl for acl in acls}
    if not wanted:
        return 0
    admin = AdminClient(config.client())
    futures = admin.create_acls(list(wanted), request_timeout=ADMIN_TIMEOUT_S)
    for bound, future in futures.items():
        try:
            future.result(ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            raise AclError(f"{kafka_acls_command(wanted[bound])}: {exc.args[0].str()}") from None
    return len(wanted)
