"""The failover benchmark's load client, as two processes of their own.

`send` produces Appends at a fixed rate, open loop (on a schedule, never
waiting for replies), round robin over the workflows of the history, as
`DuRootClient` produces them (idempotent, acks=all, linger 5 ms, reply-topic /
reply-partition / correlation-id headers), until SIGTERM. `receive` reads the
reply partition read_committed (`new_reader`, `fetch.wait.max.ms` 10, from its
end offset) until SIGTERM. Both append one JSON line per command to `--out`
and flush it every tenth of a second, so the benchmark can follow them live:

    send:    [command id, commands partition, sent]       (seconds since the epoch)
    receive: [command id, visible, produced]   (produced: the reply's record
             timestamp, set when the processor produced it, before its transaction
             committed; the clocks are the same machine's)

    python -m benchmarks.failover_client send --bootstrap-servers B --topic-prefix P \
        --workflows 120 --seed 7 --rate 200 --tag T --out FILE
    python -m benchmarks.failover_client receive --bootstrap-servers B --topic-prefix P \
        --out FILE
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

from benchmarks.latency_client import client_producer, replies, reply_headers, reply_reader
from benchmarks.workload import workflow_ids
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import NO_VC, Append, Command, PathUsage
from duroot_stream.ids import new_ulid, now_ms
from duroot_stream.wire import Codec, Topics, partition_for

PARTITIONS = 6
REPLY_PARTITION = 0
FLUSH_S = 0.1


def stop_on_sigterm() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


class Lines:
    """JSON lines to a file, written out every `FLUSH_S`."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.pending: list[str] = []
        self.flushed = time.monotonic()

    def add(self, item: object) -> None:
        self.pending.append(json.dumps(item) + "\n")

    def flush(self, force: bool = False) -> None:
        if force or time.monotonic() - self.flushed >= FLUSH_S:
            self.out.writelines(self.pending)
            self.out.flush()
            self.pending.clear()
            self.flushed = time.monotonic()


def send(config: KafkaConfig, args: argparse.Namespace) -> None:
    stop = stop_on_sigterm()
    topics = Topics(config.topic_prefix)
    producer = client_producer(config)
    codec = Codec()
    ids = workflow_ids(args.workflows, seed=args.seed)
    workflows = [(wf, wf.encode(), partition_for(wf, PARTITIONS)) for wf in ids]
    headers = reply_headers(topics, REPLY_PARTITION)
    start, i = time.monotonic(), 0
    with open(args.out, "w", encoding="utf-8") as out:
        lines = Lines(out)
        while not stop.is_set():
            pause = start + i / args.rate - time.monotonic()
            if pause > 0.0005:
                stop.wait(pause)
                continue
            wf, key, partition = workflows[i % len(workflows)]
            command_id = new_ulid()
            body = Append((PathUsage(f"{args.tag}/l{i}", 4096),))
            value = codec.encode_command(Command(command_id, wf, NO_VC, now_ms(), body))
            record_headers = [*headers, ("correlation-id", command_id.encode())]
            producer.produce(topics.commands, value, key, partition, headers=record_headers)
            lines.add([command_id, partition, time.time()])
            producer.poll(0)
            lines.flush()
            i += 1
        producer.flush(30)
        lines.flush(force=True)


def receive(config: KafkaConfig, args: argparse.Namespace) -> None:
    stop = stop_on_sigterm()
    consumer = reply_reader(config, REPLY_PARTITION)
    print("ready", flush=True)
    with open(args.out, "w", encoding="utf-8") as out:
        lines = Lines(out)
        while not stop.is_set():
            for reply in replies(consumer):
                lines.add(list(reply))
            lines.flush()
        lines.flush(force=True)
    consumer.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.failover_client")
    parser.add_argument("mode", choices=("send", "receive"))
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic-prefix", required=True)
    parser.add_argument("--workflows", type=int, default=120)
    parser.add_argument("--seed", type=int, default=7, help="of the workflow ids")
    parser.add_argument("--rate", type=float, default=200.0, help="commands per second")
    parser.add_argument("--tag", default="run", help="path prefix, distinct per run")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    config = KafkaConfig(bootstrap_servers=args.bootstrap_servers, topic_prefix=args.topic_prefix)
    (send if args.mode == "send" else receive)(config, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
