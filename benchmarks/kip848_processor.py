"""`duroot-stream` with consumers fit for `group.protocol=consumer` (KIP-848): an
experiment of `benchmarks.failover --group-protocol consumer`, not the product.

With `group.protocol=consumer` librdkafka refuses to create a consumer whose
settings name `session.timeout.ms`, `heartbeat.interval.ms` or
`partition.assignment.strategy` (rd_kafka_conf_finalize: the session and the
heartbeat are the broker's, `group.consumer.session.timeout.ms` and
`group.consumer.heartbeat.interval.ms`; the assignor is the broker's,
`group.remote.assignor`). The processor's command consumer sets all three, so
`duroot-stream processor -X group.protocol=consumer` stops at start with a
configuration error, and `-X` can add settings but not remove them. This
module drops the three from a consumer's settings when they ask for
`group.protocol=consumer`, then runs the command line as `duroot-stream` does.

    python -m benchmarks.kip848_processor processor ... -X group.protocol=consumer
"""

from __future__ import annotations

import sys
from typing import Any

from confluent_kafka import Consumer

import duroot_stream.kafka.clients as clients
from duroot_stream.cli.main import main

CLASSIC_ONLY = ("session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy")


def consumer(conf: dict[str, Any]) -> Consumer:
    if conf.get("group.protocol") == "consumer":
        conf = {k: v for k, v in conf.items() if k not in CLASSIC_ONLY}
    return Consumer(conf)


if __name__ == "__main__":
    clients.Consumer = consumer  # type: ignore[attr-defined,assignment]  # new_consumer calls it
    sys.exit(main())
