"""The latency benchmark's client, as two processes of their own.

`send` produces Appends at a fixed rate, open loop (on a schedule, never
waiting for replies), as `DuRootClient` produces them (idempotent, acks=all,
linger 5 ms, reply-topic / reply-partition / correlation-id headers), and
writes when it sent each. `receive` reads the reply partition as
`DuRootClient` does (`new_reader`, `fetch.wait.max.ms` 10, assigned at the
end offset) and writes when each reply became visible and its record
timestamp (when the processor produced it, before its transaction
committed). Neither shares a process (a GIL) with the other, the processor
or the benchmark.

Output: one JSON line per command, `[key, time]` (`send`) or `[key, visible,
produced]` (`receive`), times in seconds since the epoch.

    python -m benchmarks.latency_client send --bootstrap-servers B --topic-prefix P \
        --partitions N --reply-partition R --rate 1000 --seconds 10 --seed 1 --tag T --out FILE
    python -m benchmarks.latency_client receive --bootstrap-servers B --topic-prefix P \
        --reply-partition R --count N --timeout 60 --out FILE
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from confluent_kafka import Consumer, Producer, TopicPartition

from benchmarks.workload import workflow_ids
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import NO_VC, Append, Command, PathUsage
from duroot_stream.ids import new_ulid, now_ms
from duroot_stream.kafka import new_producer, new_reader, watermarks
from duroot_stream.wire import REPLY_PARTITION, REPLY_TOPIC, Codec, Topics, partition_for

WORKFLOWS = 1_000


Headers = list[tuple[str, str | bytes | None]]


def client_producer(config: KafkaConfig) -> Producer:
    """A producer of commands as `DuRootClient` makes one."""
    return new_producer(
        config,
        **{
            "acks": "all",
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
        },
    )


def reply_headers(topics: Topics, reply_partition: int) -> Headers:
    """A command's reply route: the replies topic, `reply_partition` of it."""
    return [
        (REPLY_TOPIC, topics.replies.encode()),
        (REPLY_PARTITION, str(reply_partition).encode()),
    ]


def reply_reader(config: KafkaConfig, reply_partition: int) -> Consumer:
    """A reader of one reply partition as `DuRootClient` has it, from its end offset."""
    topic = Topics(config.topic_prefix).replies
    consumer = new_reader(config, **{"fetch.wait.max.ms": 10})
    _, high = watermarks(consumer, topic, reply_partition)
    consumer.assign([TopicPartition(topic, reply_partition, high)])
    return consumer


def replies(consumer: Consumer) -> list[tuple[str, float, float]]:
    """The replies fetched now, waiting up to 50 ms for one if none is: (key, seen,
    produced), times in seconds since the epoch."""
    # What is fetched, at once; `consume(n, timeout)` would wait for all n.
    messages = consumer.consume(num_messages=1000, timeout=0)
    if not messages:
        message = consumer.poll(0.05)
        messages = [message] if message is not None else []
    now = time.time()
    return [
        (key.decode(), now, message.timestamp()[1] / 1000)
        for message in messages
        if message.error() is None and (key := message.key()) is not None
    ]


def send(config: KafkaConfig, args: argparse.Namespace) -> None:
    topics = Topics(config.topic_prefix)
    producer = client_producer(config)
    codec = Codec()
    workflows = workflow_ids(WORKFLOWS, seed=args.seed)
    count = int(args.rate * args.seconds)
    headers = reply_headers(topics, args.reply_partition)
    commands = []  # made before sending: the schedule is not held up by encoding
    for i in range(count):
        wf = workflows[i % len(workflows)]
        command_id = new_ulid()
        body = Append((PathUsage(f"{args.tag}/l{i}", 4096),))
        value = codec.encode_command(Command(command_id, wf, NO_VC, now_ms(), body))
        commands.append((wf.encode(), partition_for(wf, args.partitions), command_id, value))
    sent: list[tuple[str, float]] = []
    start = time.monotonic() + 0.05
    for i, (key, partition, command_id, value) in enumerate(commands):
        pause = start + i / args.rate - time.monotonic()
        if pause > 0.0005:
            time.sleep(pause)
        record_headers = [*headers, ("correlation-id", command_id.encode())]
        producer.produce(topics.commands, value, key, partition=partition, headers=record_headers)
        sent.append((command_id, time.time()))
        producer.poll(0)
    producer.flush(30)
    achieved = count / (time.monotonic() - start)
    with open(args.out, "w", encoding="utf-8") as out:
        out.write(json.dumps({"achieved_per_s": achieved}) + "\n")
        out.writelines(json.dumps(item) + "\n" for item in sent)


def receive(config: KafkaConfig, args: argparse.Namespace) -> None:
    consumer = reply_reader(config, args.reply_partition)
    seen: list[tuple[str, float, float]] = []
    print("ready", flush=True)
    deadline = time.monotonic() + args.timeout
    while len(seen) < args.count and time.monotonic() < deadline:
        seen.extend(replies(consumer))
    consumer.close()
    with open(args.out, "w", encoding="utf-8") as out:
        out.writelines(json.dumps(item) + "\n" for item in seen)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_client")
    parser.add_argument("mode", choices=("send", "receive"))
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic-prefix", required=True)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--reply-partition", type=int, default=0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1, help="of the workflow ids")
    parser.add_argument("--tag", default="run", help="path prefix, distinct per run")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    config = KafkaConfig(bootstrap_servers=args.bootstrap_servers, topic_prefix=args.topic_prefix)
    (send if args.mode == "send" else receive)(config, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
