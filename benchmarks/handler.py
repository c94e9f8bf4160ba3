"""Benchmark of the processor's per-command Python, in one process, without Kafka.

`CommandHandler.handle` (what the loop runs per consumed record: headers,
trace context, route, decode, checks, decide, encode, undo, counts) over
records made with confluent-kafka's `Message`, a transaction per 1,000 commands, on
the in-memory adapter of the engine's port (tests/processor/memory.py), which only
keeps a transaction's records until its commit: what a command costs the processor's
one Python thread before librdkafka and the broker take over. The commits (their
metrics) are not timed. CPU time of the process
(`time.process_time`), best of several rounds, each on fresh state, so the
figure moves much less with the load of a shared machine than the rates of
the Kafka benchmarks do.

Figures (microseconds of CPU per command):

- `us_append_1_path`: an `Append` of one path with the route headers the
  client sends (reply-topic, reply-partition, correlation-id), 1,000
  workflows, a transaction per 1,000 commands;
- `us_append_10000_paths`: an `Append` of 10,000 paths (a runner's batch);
  `us_per_path` the same per path.

Run: `python -m benchmarks.handler [--quick] [--json]`; writes bench-results/handler.json
(with --json: prints the figures as one JSON object instead).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Sequence

from confluent_kafka import Message
from tests.processor.memory import MemoryProcessor

from benchmarks.workload import REGISTRY_ID, write_report
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    NO_VC,
    Accepted,
    Append,
    Command,
    Init,
    PathUsage,
    decide,
    initial_state,
)
from duroot_stream.ids import MonotonicUlids, new_ulid, now_ms
from duroot_stream.processor.settings import ProcessorSettings
from duroot_stream.wire import Codec, Topics, partition_for, reply_route_headers

PARTITIONS = 6
TOPICS = Topics("bench.")
WORKFLOWS = [str(uuid.UUID(int=i * 7919 + 12345)) for i in range(1000)]
BATCH = 1000  # commands per transaction, the processor's default


def _processor() -> MemoryProcessor:
    """The engine on the in-memory adapter (no record size check; committed records
    counted, not kept), its 1,000 workflows INITIALIZED."""
    settings = ProcessorSettings(KafkaConfig(topic_prefix=TOPICS.prefix))
    p = MemoryProcessor(settings, partitions=PARTITIONS, max_record_bytes=None, keep=False)
    new_id = MonotonicUlids()
    for wf in WORKFLOWS:
        init = Init(REGISTRY_ID, "/example/data", "files.example.org", "/srv/data")
        decision = decide(initial_state(wf), Command(new_ulid(), wf, NO_VC, now_ms(), init), new_id)
        assert isinstance(decision, Accepted)
        p.workflows.replace(p.workflows.of(partition_for(wf, PARTITIONS)), None, decision.state)
    return p


def _appends(codec: Codec, n: int, paths: int) -> list[Message]:
    out = []
    for i in range(n):
        wf = WORKFLOWS[i % len(WORKFLOWS)]
        command_id = new_ulid()
        body = Append(tuple(PathUsage(f"dir{i}/sub{j}", 4096 * j) for j in range(paths)))
        value = codec.encode_command(Command(command_id, wf, NO_VC, now_ms(), body))
        route: list[tuple[str, str | bytes | None]] = [
            *reply_route_headers(TOPICS.replies, 3, command_id)
        ]
        out.append(
            Message(
                topic=TOPICS.commands,
                partition=partition_for(wf, PARTITIONS),
                offset=i,
                key=wf.encode(),
                value=value,
                headers=route,
            )
        )
    return out


def cpu_us_per_command(n: int, paths: int, rounds: int) -> float:
    """CPU microseconds per command, best of `rounds`, each on fresh workflows."""
    messages = _appends(Codec(), n, paths)
    best = float("inf")
    for _ in range(rounds):
        p = _processor()
        handle, commit = p.handler.handle, p.batches.commit
        spent = 0.0
        started = time.process_time()
        for i, message in enumerate(messages, 1):
            handle(message)
            if i % BATCH == 0:
                spent += time.process_time() - started
                commit()  # the next command begins the next transaction
                started = time.process_time()
        spent += time.process_time() - started
        best = min(best, spent)
        assert commit() and p.kafka.commits > 0
        states = p.counted("state_records", {"kind": "state"})  # one per workflow per commit
        assert p.kafka.kept == n * (paths + 1) + states
    return round(best / n * 1e6, 2)


def main(argv: Sequence[str] = ()) -> None:
    quick = "--quick" in argv
    rounds = 3 if quick else 5
    one = cpu_us_per_command(5_000 if quick else 20_000, 1, rounds)
    big = cpu_us_per_command(3 if quick else 10, 10_000, rounds)
    results = {
        "us_append_1_path": one,
        "us_append_10000_paths": big,
        "us_per_path": round(big / 10_000, 3),
    }
    if "--json" in argv:  # the figures alone, on stdout (benchmarks.baseline)
        print(json.dumps(results))
        return
    for name, value in results.items():
        print(f"{name:<24} {value:>12,.2f} us of CPU")
    print(f"wrote {write_report('handler', quick, results)}")


if __name__ == "__main__":
    main(sys.argv[1:])
