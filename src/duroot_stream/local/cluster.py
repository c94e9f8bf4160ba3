"""A local three-node Kafka cluster (KRaft, loopback) for the reliability suite.

Every node is a combined broker and controller (`LocalBroker` with a `Quorum`), one
quorum of all of them, small heaps, data dirs under one directory. With three or
more nodes topics get three replicas and `min.insync.replicas` 2, the offsets and
transaction-state topics too (see `broker.server_properties`), so one node may die
without losing a committed write.

The faults a test wants are here: which node leads a partition, which one is the
transaction coordinator of a transactional id (Kafka's own rule: the leader of
partition `abs(id.hashCode()) % partitions` of `__transaction_state`; librdkafka has
no FindCoordinator call of its own in the admin API), SIGKILL a node and start it
again on its data dir and ports.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from duroot_stream.local import BrokerError
from duroot_stream.local.broker import (
    START_TIMEOUT_S,
    LocalBroker,
    Quorum,
    free_port,
    new_cluster_id,
)

TRANSACTION_STATE_TOPIC = "__transaction_state"
OFFSETS_TOPIC = "__consumer_offsets"
METADATA_TIMEOUT_S = 10.0


def java_string_hash(text: str) -> int:
    """Java's `String.hashCode()` (over UTF-16 code units), as a signed 32-bit int."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def coordinator_partition(key: str, partitions: int) -> int:
    """The internal topic's partition whose leader coordinates `key` (a transactional id
    in `__transaction_state`, a group id in `__consumer_offsets`): Kafka's `Utils.abs`
    (MIN_VALUE maps to 0) of the Java hash, modulo the partition count."""
    h = java_string_hash(key)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


class LocalCluster:
    """Start, inspect, fault and stop `nodes` local brokers. Use as a context manager."""

    def __init__(
        self,
        nodes: int = 3,
        base_dir: Path | None = None,
        heap: str = "384m",
        log_dir: Path | None = None,
    ) -> None:
        """`base_dir` keeps the nodes' data (node-1, node-2, ...; default: a temporary
        directory removed at stop); `log_dir`: each node's stderr as node-N.log there."""
        if nodes < 1:
            raise BrokerError(f"a cluster of {nodes} nodes: at least one")
        self._keep_data = base_dir is not None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="duroot-cluster-"))
        voters = {n: free_port() for n in range(1, nodes + 1)}
        cluster_id = new_cluster_id()
        self.nodes: dict[int, LocalBroker] = {
            n: LocalBroker(
                port=free_port(),
                data_dir=self.base_dir / f"node-{n}",
                log_file=(log_dir / f"node-{n}.log") if log_dir else None,
                heap=heap,
                quorum=Quorum(n, voters, cluster_id),
            )
            for n in voters
        }
        self._admin: AdminClient | None = None

    @property
    def bootstrap(self) -> str:
        """Every node's address: a client still finds the cluster with one node down."""
        return ",".join(b.bootstrap for b in self.nodes.values())

    def client_settings(self) -> dict[str, str]:
        return {"bootstrap.servers": self.bootstrap}

    def admin(self) -> AdminClient:
        if self._admin is None:  # one client: each new one would connect afresh
            self._admin = AdminClient({**self.client_settings(), "log_level": 0})
        return self._admin

    # --- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_S) -> LocalCluster:
        """Launch every node first (no node answers before the quorum has a leader), then
        wait until each answers and the metadata lists all of them."""
        try:
            for node in self.nodes.values():
                node.launch()
            for node in self.nodes.values():
                node.wait_ready(timeout)
            self.wait_brokers(set(self.nodes), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM every node at once (one at a time, the last ones would lose their
        quorum and wait for a controlled shutdown that cannot come); remove temp data."""
        threads = [threading.Thread(target=node.stop) for node in self.nodes.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self._admin = None
        if not self._keep_data:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no controlled shutdown, its leaderships move on election."""
        self.nodes[node_id].kill()

    def restart(self, node_id: int, timeout: float = START_TIMEOUT_S, wait: bool = True) -> None:
        """Start a killed node again on its data dir and ports; returns once it answers,
        or at once with `wait=False` (then `nodes[node_id].wait_ready()`)."""
        if wait:
            self.nodes[node_id].start(timeout)
        else:
            self.nodes[node_id].launch()

    def running(self) -> list[int]:
        return [n for n, b in self.nodes.items() if b.process and b.process.poll() is None]

    # --- who does what -----------------------------------------------------------

    def brokers(self) -> set[int]:
        """The node ids the cluster's metadata lists as brokers (alive, unfenced)."""
        md = self.admin().list_topics(timeout=METADATA_TIMEOUT_S)
        return set(md.brokers)

    def wait_brokers(self, expected: set[int], timeout: float = START_TIMEOUT_S) -> None:
        self._wait(lambda: self.brokers() == expected, timeout, f"brokers {sorted(expected)}")

    def leader(self, topic: str, partition: int) -> int:
        """The node leading `topic[partition]` now (-1 while none does, or while the
        node asked does not know of the partition yet: a topic just created)."""
        md = self.admin().list_topics(topic, timeout=METADATA_TIMEOUT_S)
        found = md.topics.get(topic)
        known = None if found is None else found.partitions.get(partition)
        return -1 if known is None else int(known.leader)

    def transaction_coordinator(self, transactional_id: str) -> int:
        """The node that coordinates `transactional_id`'s transactions."""
        return self._coordinator(TRANSACTION_STATE_TOPIC, transactional_id)

    def group_coordinator(self, group_id: str) -> int:
        return self._coordinator(OFFSETS_TOPIC, group_id)

    def _coordinator(self, topic: str, key: str) -> int:
        md = self.admin().list_topics(topic, timeout=METADATA_TIMEOUT_S)
        partitions = md.topics[topic].partitions
        if not partitions:
            raise BrokerError(f"{topic} does not exist yet: nothing has used it")
        return int(partitions[coordinator_partition(key, len(partitions))].leader)

    def under_replicated(self, topics: list[str]) -> list[str]:
        """Partitions of `topics` whose in-sync replicas are fewer than their replicas."""
        md = self.admin().list_topics(timeout=METADATA_TIMEOUT_S)
        return [
            f"{name}[{p.id}] isr={sorted(p.isrs)} replicas={sorted(p.replicas)}"
            for name in topics
            if name in md.topics
            for p in md.topics[name].partitions.values()
            if len(p.isrs) < len(p.replicas)
        ]

    @staticmethod
    def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except KafkaException:
                pass  # a node going or coming: ask again
            time.sleep(0.2)
        raise BrokerError(f"the local cluster did not show {what} within {timeout:.0f} s")

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
