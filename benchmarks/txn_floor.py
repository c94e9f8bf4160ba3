"""The floor of a reply: one bare transaction, and what its retry backoff costs.

A transactional producer runs transactions back to back, each `begin`, two
produces, `send_offsets_to_transaction`, `commit_transaction`, no domain
work: the least a command's reply can wait for once it is produced. Two
settings, taking turns, three rounds (medians and p90 over all of them):

- `default`: librdkafka's `retry.backoff.ms` 100 / `retry.backoff.max.ms` 1000;
- `tuned`: the processor's (`RETRY_BACKOFF_MS` / `RETRY_BACKOFF_MAX_MS`).

The cause is checked, not assumed: one more round of each runs with
`debug=eos,protocol`, librdkafka's log (stderr) to a file, and counts the
CONCURRENT_TRANSACTIONS answers per transaction.

Run: `python -m benchmarks.txn_floor [--quick]`; writes bench-results/txn_floor.json.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from benchmarks.results import TxnFloorResult, TxnFloorSetting
from benchmarks.workload import bootstrap, fresh_topics, log, machine_load, write_report
from duroot_stream.config import KafkaConfig
from duroot_stream.processor import RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_MS
from duroot_stream.wire import Topics

SETTINGS: dict[str, dict[str, int]] = {
    "default": {"retry.backoff.ms": 100, "retry.backoff.max.ms": 1000},
    "tuned": {"retry.backoff.ms": RETRY_BACKOFF_MS, "retry.backoff.max.ms": RETRY_BACKOFF_MAX_MS},
}
STEPS = ("produce", "send_offsets", "commit", "total")


def transactions(config: KafkaConfig, settings: dict[str, Any], n: int) -> dict[str, list[float]]:
    """`n` bare transactions back to back: seconds per step of each."""
    topics = Topics(config.topic_prefix)
    producer = Producer(
        config.client(
            **{"transactional.id": f"floor-{uuid.uuid4().hex[:8]}", "linger.ms": 5, **settings}
        )
    )
    consumer = Consumer(config.client(**{"group.id": f"floor-{uuid.uuid4().hex[:8]}"}))
    times: dict[str, list[float]] = {step: [] for step in STEPS}
    try:
        producer.init_transactions(30)
        metadata = consumer.consumer_group_metadata()
        for i in range(n + 1):
            t0 = time.perf_counter()
            producer.begin_transaction()
            producer.produce(topics.events, b"e" * 200, b"k", partition=0)
            producer.produce(topics.replies, b"r" * 100, b"k", partition=0)
            t1 = time.perf_counter()
            offsets = [TopicPartition(topics.commands, 0, i + 1)]
            producer.send_offsets_to_transaction(offsets, metadata, 30)
            t2 = time.perf_counter()
            producer.commit_transaction(30)
            t3 = time.perf_counter()
            if i:  # the first one finds the coordinator
                for step, seconds in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                    times[step].append(seconds)
    finally:
        consumer.close()
        producer.flush(5)
    return times


@contextmanager
def stderr_to(path: str) -> Iterator[None]:
    """librdkafka logs to fd 2 from its own threads: point fd 2 at `path` meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "wb") as out:
        os.dup2(out.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def concurrent_transactions(config: KafkaConfig, settings: dict[str, Any], n: int) -> float:
    """CONCURRENT_TRANSACTIONS answers to AddOffsetsToTxn per transaction, from
    librdkafka's debug log."""
    with tempfile.NamedTemporaryFile(suffix=".log", delete=False) as f:
        path = f.name
    with stderr_to(path):
        transactions(config, {**settings, "debug": "eos,protocol"}, n)
    with open(path, encoding="utf-8", errors="replace") as f:
        # "AddOffsetsToTxn response from TxnCoordinator/1: CONCURRENT_TRANSACTIONS (Retry)"
        hits = sum(1 for line in f if "ADDOFFSETS" in line and "CONCURRENT_TRANSACTIONS" in line)
    os.unlink(path)
    return hits / (n + 1)


def run(quick: bool = False) -> TxnFloorResult:
    n = 30 if quick else 100
    rounds = 1 if quick else 3
    settings: dict[str, TxnFloorSetting] = {}
    with bootstrap() as servers:
        config = fresh_topics(servers, 1)
        transactions(config, SETTINGS["tuned"], 10)  # warm-up, not counted
        load = machine_load("the bare transactions")
        # Taking turns. Pooled over the rounds, not the best round: whether the
        # coordinator is still busy with the last transaction's markers varies
        # from round to round, and the best round alone hides it.
        pooled: dict[str, dict[str, list[float]]] = {
            name: {step: [] for step in STEPS} for name in SETTINGS
        }
        for _ in range(rounds):
            for name, backoff in SETTINGS.items():
                times = transactions(config, backoff, n)
                for step, seconds in times.items():
                    pooled[name][step].extend(seconds)
                median_ms = statistics.median(times["total"]) * 1000
                log(f"bare transaction, {name}: median {median_ms:.1f} ms")
        for name, steps in pooled.items():
            per_txn = concurrent_transactions(config, SETTINGS[name], 20)
            log(f"{name}: {per_txn:.2f} CONCURRENT_TRANSACTIONS answers per transaction")
            totals = sorted(steps["total"])
            settings[name] = TxnFloorSetting(
                produce_p50_ms=_ms(statistics.median(steps["produce"])),
                send_offsets_p50_ms=_ms(statistics.median(steps["send_offsets"])),
                commit_p50_ms=_ms(statistics.median(steps["commit"])),
                total_p50_ms=_ms(statistics.median(totals)),
                total_p90_ms=_ms(totals[int(0.9 * len(totals))]),
                concurrent_transactions_per_txn=round(per_txn, 2),
            )
    return TxnFloorResult(settings["tuned"], settings["default"], load)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def main(argv: Sequence[str] = ()) -> TxnFloorResult:
    quick = "--quick" in argv
    result = run(quick=quick)
    for name, setting in (("tuned", result.tuned), ("default", result.default)):
        for figure, value in asdict(setting).items():
            print(f"{name + ' ' + figure:<44} {value:>10,.2f}")
    print(f"wrote {write_report('txn_floor', quick, result)}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
