"""A late EndTxn commits the next transaction: the hazard the network scenario met.

librdkafka speaks the old transaction protocol (no KIP-890 part 2: one producer
epoch for every transaction). When the network holds an EndTxn(commit) past the
request timeout, librdkafka sends it again on a new connection, the retry commits,
`commit_transaction()` returns normally and the next transaction begins with the
same producer id and epoch. When the held request then reaches the coordinator it
is taken for the *current* transaction and commits it: records the application
never committed (and wanted to abort) become visible to read_committed readers,
without the consumed offsets that belonged with them. A processor that goes on with
the same producer after a slow commit can therefore answer commands twice.

This test shows the hazard on a bare transactional producer, deterministically (the
proxy holds exactly one EndTxn). It states what Kafka and librdkafka do today; when
it fails, the platform changed (transactions v2) and the processor's defence can go.
The processor's defence: it gives a transactional call up after 6 s, long before
librdkafka's request timeout (just below its 40 s transaction timeout), and renews its
producer, whose new epoch fences the late request (test_network_faults.py,
`past-timeout`, asserts that renewal).
"""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from duroot_stream.local.broker import LocalBroker
from tests.kafka_helpers import wait_until
from tests.reliability.proxy import END_TXN, FaultProxy

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.timeout(900)]

# librdkafka lowers its request timeout (socket.timeout.ms) to just below the
# transaction timeout: 10 s makes a hold of 14 s outlast it, so the EndTxn is re-sent.
TRANSACTION_TIMEOUT_MS = 10_000
HOLD_S = 14.0
READ_S = 30.0  # one read of the topic to its end
TOPIC = "late-endtxn"


def committed_values(bootstrap: str) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "late-endtxn-reader",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        consumer.assign([TopicPartition(TOPIC, 0, 0)])
        values = []
        while (message := consumer.poll(READ_S)) is not None and message.error() is None:
            values.append(message.value() or b"")
        return values
    finally:
        consumer.close()


def test_late_end_txn_commits_the_next_transaction(
    proxied_broker: tuple[LocalBroker, FaultProxy],
) -> None:
    broker, proxy = proxied_broker
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})  # alive until the result
    admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result()
    del admin  # destroyed now, while the broker answers
    producer = Producer(
        {
            "bootstrap.servers": proxy.address,
            "transactional.id": "late-endtxn",
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
        }
    )
    try:
        producer.init_transactions(60)
        producer.begin_transaction()
        producer.produce(TOPIC, b"first")
        producer.flush(60)
        proxy.delay({END_TXN}, HOLD_S)
        producer.commit_transaction(120)  # the held EndTxn times out, the retry commits
        assert proxy.delayed({END_TXN}) == 0, "the commit waited for the held EndTxn"

        producer.begin_transaction()
        producer.produce(TOPIC, b"second, never committed")
        producer.flush(60)
        wait_until(
            lambda: proxy.delayed({END_TXN}) == 1,
            timeout=HOLD_S + READ_S,
            what="the held EndTxn sent",
        )
        wait_until(
            lambda: b"second, never committed" in committed_values(broker.bootstrap),
            timeout=READ_S,
            what="the late EndTxn committing the second transaction",
        )
        with pytest.raises(KafkaException, match=r"INVALID_TXN_STATE"):
            producer.abort_transaction(60)  # too late: the coordinator has committed it
        assert committed_values(broker.bootstrap) == [b"first", b"second, never committed"]
    finally:
        del producer  # destroyed while the broker answers, even when the test failed
